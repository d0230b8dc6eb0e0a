/// Why a lookup gave no answer. Every case is either temporary (try again later: defer the
/// mail) or permanent (the DNS said no: bounce or reject), as `isTemporary` tells.
public enum DNSError: Error, Sendable, Hashable, CustomStringConvertible {
    /// SERVFAIL, REFUSED, a timeout, a network error, a truncated answer that TCP could not
    /// complete: asking again later may succeed.
    case temporary(String)
    /// NXDOMAIN (RFC 1035 §4.1.1 RCODE 3): the name does not exist.
    case nameNotFound
    /// NOERROR with no record of the asked type (RFC 2308 §2.2 "NODATA"): the name exists.
    case noData
    /// A reply that could not be parsed or made no sense (e.g. a CNAME loop). Treated as
    /// temporary: a broken or spoofed reply must never turn into a bounce.
    case malformed(String)
    /// The question itself is invalid (not a domain name, not an IP address): permanent.
    case invalidInput(String)

    /// True when the same question may get an answer later.
    public var isTemporary: Bool {
        switch self {
        case .temporary, .malformed: true
        case .nameNotFound, .noData, .invalidInput: false
        }
    }

    public var description: String {
        switch self {
        case .temporary(let reason): "temporary DNS failure: \(reason)"
        case .nameNotFound: "name not found (NXDOMAIN)"
        case .noData: "no records of that type (NODATA)"
        case .malformed(let reason): "malformed DNS reply: \(reason)"
        case .invalidInput(let reason): "invalid DNS question: \(reason)"
        }
    }
}

/// Why bytes are not a valid DNS message (RFC 1035 §4). The parser throws these and never traps.
public enum DNSFormatError: Error, Sendable, Hashable {
    /// The message ends inside a field.
    case truncated
    /// A name in presentation form has a label of more than 63 octets, or an empty label.
    case badLabel
    /// A name is longer than 255 octets in wire form.
    case nameTooLong
    /// A label length octet starts with 01 or 10 (RFC 6891 §5 retired extended label types).
    case badLabelType
    /// A compression pointer does not point strictly backwards (a loop or a forward jump).
    case badPointer
    /// More compression pointers in one name than `DNSLimits.compressionPointers`.
    case tooManyPointers
    /// RDATA whose length does not match its type's layout.
    case badRData(DNSRecordType)
    /// An OPT record outside the additional section, with a non-root owner, or more than one
    /// (RFC 6891 §6.1.1).
    case badOPT
    /// Bytes left over after the last record.
    case trailingBytes
}
