/// `Path = "<" [ A-d-l ":" ] Mailbox ">"` (RFC 5321 §4.1.2), shared by MAIL and RCPT.
enum Path {
    //  Path       = "<" [ A-d-l ":" ] Mailbox ">"
    //  A-d-l      = At-domain *( "," At-domain )
    //  At-domain  = "@" Domain
    /// Parses what is between the angle brackets. A source route is checked and discarded:
    /// RFC 5321 Appendix C asks servers to accept it and deliver to the final mailbox.
    static func parseMailbox(inBrackets bytes: ArraySlice<UInt8>) throws(SMTPCommandError) -> Mailbox {
        guard bytes.count + 2 <= SMTPLimits.pathLength else { throw .badAddress("path too long") }
        var mailbox = bytes
        if bytes.first == UInt8(ascii: "@") {
            guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")) else {
                throw .badAddress("source route without colon")
            }
            for atDomain in bytes[..<colon].split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false) {
                guard atDomain.first == UInt8(ascii: "@") else { throw .badAddress("invalid source route") }
                try MailDomain.validateDomainName(atDomain.dropFirst())
            }
            mailbox = bytes[(colon + 1)...]
        }
        return try Mailbox.parse(bytes: mailbox)
    }

    /// Splits a MAIL/RCPT argument into the path and what follows (the parameters). With `<`,
    /// the path ends at the first `>` outside a Quoted-string; without, at the first space
    /// outside one (the telnet form `MAIL FROM: joe@x.test` that Postfix accepts). Returns the
    /// path's content without brackets.
    static func split(_ bytes: ArraySlice<UInt8>) throws(SMTPCommandError) -> (
        path: ArraySlice<UInt8>, rest: ArraySlice<UInt8>
    ) {
        let bracketed = bytes.first == UInt8(ascii: "<")
        let start = bracketed ? bytes.startIndex + 1 : bytes.startIndex
        let terminator = bracketed ? UInt8(ascii: ">") : UInt8(ascii: " ")
        var index = start
        var inQuotes = false
        while index < bytes.endIndex {
            let byte = bytes[index]
            if inQuotes {
                if byte == UInt8(ascii: "\\") {
                    index += 1
                } else if byte == UInt8(ascii: "\"") {
                    inQuotes = false
                }
            } else if byte == UInt8(ascii: "\"") {
                inQuotes = true
            } else if byte == terminator {
                break
            }
            index += 1
        }
        if bracketed {
            guard index < bytes.endIndex else { throw .badAddress("missing >") }
            let rest = bytes[(index + 1)...]
            guard rest.isEmpty || rest.first == UInt8(ascii: " ") else {
                throw .badAddress("text after >")
            }
            return (bytes[start..<index], rest)
        }
        let end = min(index, bytes.endIndex)
        return (bytes[start..<end], bytes[end...])
    }
}

extension ReversePath {
    /// `Reverse-path = Path / "<>"` from the content between the brackets.
    static func parse(inBrackets bytes: ArraySlice<UInt8>) throws(SMTPCommandError) -> ReversePath {
        if bytes.isEmpty { return .null }
        return .mailbox(try Path.parseMailbox(inBrackets: bytes))
    }
}

extension ForwardPath {
    /// `Forward-path = Path` or `"<Postmaster>"` (case-insensitive, RFC 5321 §4.1.1.3) from the
    /// content between the brackets. `<>` is no recipient.
    static func parse(inBrackets bytes: ArraySlice<UInt8>) throws(SMTPCommandError) -> ForwardPath {
        if bytes.isEmpty { throw .badAddress("empty recipient") }
        if bytes.equalsCaseInsensitive("POSTMASTER") { return .postmaster }
        return .mailbox(try Path.parseMailbox(inBrackets: bytes))
    }
}
