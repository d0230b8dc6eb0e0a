extension Mailbox {
    /// Parses a mailbox (RFC 5321 §4.1.2, with RFC 6531 §3.3's UTF-8):
    ///
    ///     Mailbox       = Local-part "@" ( Domain / address-literal )
    ///     Local-part    = Dot-string / Quoted-string
    ///     Dot-string    = Atom *("."  Atom)
    ///     Atom          = 1*atext
    ///
    /// `%` and `!` are atext, so `a%b@c` and `b!a@c` are valid; relay control judges them.
    public static func parse(_ text: some StringProtocol) throws(SMTPCommandError) -> Mailbox {
        try parse(bytes: Array(text.utf8)[...])
    }

    static func parse(bytes: ArraySlice<UInt8>) throws(SMTPCommandError) -> Mailbox {
        guard let first = bytes.first else { throw .badAddress("empty address") }
        let localPart: String
        let atIndex: Int
        let wasQuoted = first == UInt8(ascii: "\"")
        if wasQuoted {
            let (decoded, end) = try parseQuotedString(bytes)
            guard end < bytes.endIndex, bytes[end] == UInt8(ascii: "@") else {
                throw .badAddress("missing @ after quoted local part")
            }
            localPart = decoded
            atIndex = end
        } else {
            guard let at = bytes.firstIndex(of: UInt8(ascii: "@")) else {
                throw .badAddress("missing @domain")
            }
            let written = bytes[..<at]
            guard isDotString(written) else { throw .badAddress("invalid local part") }
            guard let decoded = String(validUTF8: written) else { throw .badAddress("invalid UTF-8 in local part") }
            localPart = decoded
            atIndex = at
        }
        guard atIndex - bytes.startIndex <= SMTPLimits.localPartLength else {
            throw .badAddress("local part too long")
        }
        let domain = try MailDomain.parse(bytes: bytes[(atIndex + 1)...])
        return Mailbox(localPart: localPart, domain: domain, localPartWasQuoted: wasQuoted)
    }

    /// `Dot-string = Atom *("." Atom)` over octets.
    static func isDotString(_ bytes: ArraySlice<UInt8>) -> Bool {
        guard !bytes.isEmpty else { return false }
        var previousWasDot = true
        for byte in bytes {
            if byte == UInt8(ascii: ".") {
                if previousWasDot { return false }
                previousWasDot = true
            } else {
                guard isAtext(byte) else { return false }
                previousWasDot = false
            }
        }
        return !previousWasDot
    }

    //  Quoted-string   = DQUOTE *QcontentSMTP DQUOTE
    //  QcontentSMTP    = qtextSMTP / quoted-pairSMTP
    //  quoted-pairSMTP = %d92 %d32-126
    //  qtextSMTP       = %d32-33 / %d35-91 / %d93-126 / UTF8-non-ascii
    /// The decoded content of the Quoted-string at the start of `bytes` and the index after its
    /// closing quote.
    static func parseQuotedString(_ bytes: ArraySlice<UInt8>) throws(SMTPCommandError) -> (String, Int) {
        var decoded: [UInt8] = []
        var index = bytes.startIndex + 1
        while index < bytes.endIndex {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                guard let text = String(validUTF8: decoded[...]) else {
                    throw .badAddress("invalid UTF-8 in local part")
                }
                return (text, index + 1)
            case UInt8(ascii: "\\"):
                guard index + 1 < bytes.endIndex, (32...126).contains(bytes[index + 1]) else {
                    throw .badAddress("invalid quoted pair")
                }
                decoded.append(bytes[index + 1])
                index += 2
            case 32...126, 0x80...0xFF:
                decoded.append(byte)
                index += 1
            default:
                throw .badAddress("invalid character in quoted local part")
            }
        }
        throw .badAddress("unterminated quoted local part")
    }
}
