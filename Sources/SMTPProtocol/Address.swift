/// The domain part of a mailbox (RFC 5321 §4.1.2):
///     Domain          = sub-domain *("." sub-domain)
///     address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
///                             General-address-literal ) "]"
public enum MailDomain: Sendable, Hashable, CustomStringConvertible {
    /// A domain name as written (U-labels allowed under SMTPUTF8, RFC 6531 §3.3).
    case name(String)
    /// `[192.0.2.1]`: the dotted quad without brackets.
    case ipv4Literal(String)
    /// `[IPv6:2001:db8::1]`: the address after `IPv6:`, without brackets.
    case ipv6Literal(String)
    /// `[tag:content]` (General-address-literal); never routable by Tern.
    case generalLiteral(tag: String, content: String)

    public var description: String {
        switch self {
        case .name(let name): return name
        case .ipv4Literal(let address): return "[\(address)]"
        case .ipv6Literal(let address): return "[IPv6:\(address)]"
        case .generalLiteral(let tag, let content): return "[\(tag):\(content)]"
        }
    }

    /// Lower-cased ASCII form used for comparisons: domain names are case-insensitive
    /// (RFC 5321 §2.4). Non-ASCII labels are compared as written, lower-cased.
    public var canonical: String {
        switch self {
        case .name(let name): return name.lowercased()
        default: return description.lowercased()
        }
    }

    public var isAddressLiteral: Bool {
        if case .name = self { return false }
        return true
    }
}

/// `Mailbox = Local-part "@" ( Domain / address-literal )` (RFC 5321 §4.1.2).
public struct Mailbox: Sendable, Hashable, CustomStringConvertible {
    /// The local part with quoting removed: `"a b"@x` has local part `a b`.
    public var localPart: String
    public var domain: MailDomain
    /// Whether the local part was written as a Quoted-string.
    public var localPartWasQuoted: Bool

    public init(localPart: String, domain: MailDomain, localPartWasQuoted: Bool = false) {
        self.localPart = localPart
        self.domain = domain
        self.localPartWasQuoted = localPartWasQuoted
    }

    /// True when the mailbox needs SMTPUTF8 (RFC 6531): any octet above 0x7F.
    public var requiresSMTPUTF8: Bool {
        !localPart.utf8.allSatisfy { $0 < 0x80 } || !domain.description.utf8.allSatisfy { $0 < 0x80 }
    }

    /// The mailbox in SMTP form, quoting the local part when it is not a Dot-string.
    public var description: String { "\(Mailbox.encodeLocalPart(localPart))@\(domain)" }

    /// `Local-part = Dot-string / Quoted-string`: writes `localPart` as a Dot-string when it
    /// is one, otherwise as a Quoted-string with `\` before `"` and `\`.
    public static func encodeLocalPart(_ localPart: String) -> String {
        if isDotString(localPart) { return localPart }
        var quoted = "\""
        for character in localPart {
            if character == "\"" || character == "\\" { quoted.append("\\") }
            quoted.append(character)
        }
        quoted.append("\"")
        return quoted
    }

    /// `Dot-string = Atom *("." Atom)`, with UTF-8 allowed in atoms (RFC 6531 §3.3).
    public static func isDotString(_ text: String) -> Bool {
        guard !text.isEmpty else { return false }
        var previousWasDot = true
        for byte in text.utf8 {
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

    /// `atext` of RFC 5322 §3.2.3, plus every octet ≥ 0x80 (UTF8-non-ascii, RFC 6531).
    public static func isAtext(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case 0x80...0xFF:
            return true
        default:
            return "!#$%&'*+-/=?^_`{|}~".utf8.contains(byte)
        }
    }
}

/// `Reverse-path = Path / "<>"` (RFC 5321 §4.1.2): the envelope sender of MAIL FROM.
public enum ReversePath: Sendable, Hashable, CustomStringConvertible {
    /// `<>`: the null sender of bounces (RFC 5321 §4.5.5).
    case null
    case mailbox(Mailbox)

    public var description: String {
        switch self {
        case .null: return ""
        case .mailbox(let mailbox): return mailbox.description
        }
    }

    public var mailbox: Mailbox? {
        if case .mailbox(let mailbox) = self { return mailbox }
        return nil
    }
}

/// `Forward-path = Path` or `"<Postmaster>"` (RFC 5321 §4.1.1.3): the argument of RCPT TO.
public enum ForwardPath: Sendable, Hashable, CustomStringConvertible {
    /// `<Postmaster>` with no domain (case-insensitive): the postmaster of this host.
    case postmaster
    case mailbox(Mailbox)

    public var description: String {
        switch self {
        case .postmaster: return "Postmaster"
        case .mailbox(let mailbox): return mailbox.description
        }
    }
}
