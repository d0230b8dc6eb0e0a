import NIOCore

extension SMTPCommand {
    /// Parses one command line without its CRLF (RFC 5321 §4.1.1; BDAT RFC 3030 §2, STARTTLS
    /// RFC 3207 §4, AUTH RFC 4954 §4). Verbs are case-insensitive.
    ///
    /// No command may contain a control character: NUL, CR, LF, DEL, and HTAB too (every
    /// argument grammar of RFC 5321 separates with SP and has no HTAB in its text), so a line
    /// with any of them is `.invalidCharacters`. Octets ≥ 0x80 must be valid UTF-8 (RFC 6531).
    /// Trailing spaces are ignored and arguments may be separated by several spaces, for people
    /// typing in telnet.
    public static func parse(_ line: ByteBuffer) throws(SMTPCommandError) -> SMTPCommand {
        let bytes = line.readableBytesView
        var hasNonASCII = false
        for byte in bytes {
            if byte.isControl { throw .invalidCharacters }
            if byte >= 0x80 { hasNonASCII = true }
        }
        let array = Array(bytes)
        if hasNonASCII, String(validating: array, as: UTF8.self) == nil { throw .invalidCharacters }
        return try parse(bytes: array[...])
    }

    static func parse(bytes line: ArraySlice<UInt8>) throws(SMTPCommandError) -> SMTPCommand {
        let verbEnd = line.firstIndex(of: UInt8(ascii: " ")) ?? line.endIndex
        let verb = line[..<verbEnd]
        guard (1...8).contains(verb.count) else { throw .unknownCommand }
        let argument = trimmingSpaces(line[verbEnd...])
        switch String(decoding: verb.map(\.asciiUppercased), as: UTF8.self) {
        case "EHLO":
            return .ehlo(domain: try parseHelloArgument(argument, hint: "EHLO hostname"))
        case "HELO":
            return .helo(domain: try parseHelloArgument(argument, hint: "HELO hostname"))
        case "MAIL":
            return try parseMail(argument)
        case "RCPT":
            return try parseRecipient(argument)
        case "DATA":
            try requireNoArgument(argument, hint: "DATA")
            return .data
        case "BDAT":
            return try parseBinaryData(argument)
        case "RSET":
            try requireNoArgument(argument, hint: "RSET")
            return .rset
        case "NOOP":
            // "NOOP" [ SP String ]: the string has no meaning.
            return .noop
        case "QUIT":
            try requireNoArgument(argument, hint: "QUIT")
            return .quit
        case "VRFY":
            guard !argument.isEmpty else { throw .syntax("VRFY address") }
            return .vrfy(String(decoding: argument, as: UTF8.self))
        case "EXPN":
            guard !argument.isEmpty else { throw .syntax("EXPN mailing-list") }
            return .expn(String(decoding: argument, as: UTF8.self))
        case "HELP":
            return .help(argument.isEmpty ? nil : String(decoding: argument, as: UTF8.self))
        case "STARTTLS":
            try requireNoArgument(argument, hint: "STARTTLS")
            return .starttls
        case "AUTH":
            return try parseAuth(argument)
        default:
            throw .unknownCommand
        }
    }

    //  ehlo = "EHLO" SP ( Domain / address-literal ) CRLF
    //  helo = "HELO" SP Domain CRLF
    /// Any non-empty argument, as Postfix accepts it: many clients send names that are not
    /// domains, and the name only goes into `Received:`; policy may judge it.
    static func parseHelloArgument(_ argument: ArraySlice<UInt8>, hint: String) throws(SMTPCommandError) -> String {
        guard !argument.isEmpty else { throw .syntax(hint) }
        return String(decoding: argument, as: UTF8.self)
    }

    //  mail = "MAIL FROM:" Reverse-path [SP Mail-parameters] CRLF
    //  Reverse-path = Path / "<>"
    static func parseMail(_ argument: ArraySlice<UInt8>) throws(SMTPCommandError) -> SMTPCommand {
        let hint = "MAIL FROM:<address>"
        guard argument.hasCaseInsensitivePrefix("FROM:") else { throw .syntax(hint) }
        let pathAndParameters = trimmingSpaces(argument.dropFirst(5))
        guard !pathAndParameters.isEmpty else { throw .syntax(hint) }
        let (path, rest) = try Path.split(pathAndParameters)
        let reversePath: ReversePath
        if pathAndParameters.first == UInt8(ascii: "<") {
            reversePath = try ReversePath.parse(inBrackets: path)
        } else {
            reversePath = .mailbox(try Path.parseMailbox(inBrackets: path))
        }
        return .mail(reversePath, try MailParameters.parse(rest))
    }

    //  rcpt = "RCPT TO:" ( "<Postmaster@" Domain ">" / "<Postmaster>" / Forward-path )
    //         [SP Rcpt-parameters] CRLF
    static func parseRecipient(_ argument: ArraySlice<UInt8>) throws(SMTPCommandError) -> SMTPCommand {
        let hint = "RCPT TO:<address>"
        guard argument.hasCaseInsensitivePrefix("TO:") else { throw .syntax(hint) }
        let pathAndParameters = trimmingSpaces(argument.dropFirst(3))
        guard !pathAndParameters.isEmpty else { throw .syntax(hint) }
        let (path, rest) = try Path.split(pathAndParameters)
        return .rcpt(try ForwardPath.parse(inBrackets: path), try RecipientParameters.parse(rest))
    }

    //  bdat-cmd   ::= "BDAT" SP chunk-size [ SP end-marker ] CR LF
    //  chunk-size ::= 1*DIGIT
    //  end-marker ::= "LAST"
    static func parseBinaryData(_ argument: ArraySlice<UInt8>) throws(SMTPCommandError) -> SMTPCommand {
        let hint = "BDAT size [LAST]"
        let words = argument.split(separator: UInt8(ascii: " "))
        guard (1...2).contains(words.count), let digits = words.first, digits.allSatisfy(\.isDIGIT) else {
            throw .syntax(hint)
        }
        var size = 0
        for digit in digits {
            let (times10, overflow1) = size.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(Int(digit - 0x30))
            guard !overflow1, !overflow2 else { throw .syntax(hint) }
            size = sum
        }
        if words.count == 2 {
            guard words[1].equalsCaseInsensitive("LAST") else { throw .syntax(hint) }
            return .bdat(size: size, last: true)
        }
        return .bdat(size: size, last: false)
    }

    //  auth-command     = "AUTH" SP sasl-mech [SP initial-response] *(CRLF [base64]) ...
    //  sasl-mech        = 1*20mech-char
    //  mech-char        = UPPER-ALPHA / DIGIT / HYPHEN / UNDERSCORE
    //  initial-response = base64 / "="
    /// Mechanism names are matched case-insensitively and returned upper-cased.
    static func parseAuth(_ argument: ArraySlice<UInt8>) throws(SMTPCommandError) -> SMTPCommand {
        let hint = "AUTH mechanism [initial-response]"
        let words = argument.split(separator: UInt8(ascii: " "))
        guard (1...2).contains(words.count), let mechanism = words.first,
            mechanism.count <= SMTPLimits.saslMechanismLength,
            mechanism.allSatisfy({ $0.isLetDig || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") })
        else { throw .syntax(hint) }
        var initialResponse: String? = nil
        if words.count == 2 {
            let response = words[1]
            // base64 = base64-terminal / ( 1*(4base64-char) [base64-terminal] ), RFC 4954 §8.
            guard
                response.allSatisfy({
                    $0.isLetDig || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "=")
                })
            else { throw .syntax(hint) }
            initialResponse = String(decoding: response, as: UTF8.self)
        }
        return .auth(
            mechanism: String(decoding: mechanism.map(\.asciiUppercased), as: UTF8.self),
            initialResponse: initialResponse)
    }

    static func requireNoArgument(_ argument: ArraySlice<UInt8>, hint: String) throws(SMTPCommandError) {
        guard argument.isEmpty else { throw .syntax(hint) }
    }

    static func trimmingSpaces(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var trimmed = bytes
        while trimmed.first == UInt8(ascii: " ") { trimmed = trimmed.dropFirst() }
        while trimmed.last == UInt8(ascii: " ") { trimmed = trimmed.dropLast() }
        return trimmed
    }
}
