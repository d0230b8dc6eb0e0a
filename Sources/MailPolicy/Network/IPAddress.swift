/// An IPv4 or IPv6 address: a client's address, an entry of `trusted_networks`, a DNSBL query.
///
/// Parsing accepts the textual forms of RFC 4291 §2.2 (full, `::`-compressed, and with an
/// embedded dotted quad such as `::ffff:192.0.2.1`) and dotted-decimal IPv4. `description`
/// is the canonical text of RFC 5952 §4 (lower case, no leading zeros, the longest run of two
/// or more zero groups compressed, the first on a tie) and §5 for IPv4-mapped addresses.
public enum IPAddress: Sendable, Hashable, CustomStringConvertible {
    /// The 32 bits of an IPv4 address, most significant octet first.
    case v4(UInt32)
    /// The 128 bits of an IPv6 address as two halves, most significant first.
    case v6(high: UInt64, low: UInt64)

    /// Parses an IPv4 or IPv6 address in text form; nil when `text` is neither.
    /// No brackets, no zone index (`%eth0`), no prefix length.
    public init?(_ text: some StringProtocol) {
        let utf8 = Array(text.utf8)
        if utf8.contains(UInt8(ascii: ":")) {
            guard let (high, low) = Self.parseIPv6(utf8) else { return nil }
            self = .v6(high: high, low: low)
        } else {
            guard let value = Self.parseIPv4(utf8[...]) else { return nil }
            self = .v4(value)
        }
    }

    /// Builds an address from its network-order bytes: 4 for IPv4, 16 for IPv6.
    public init?(bytes: some Collection<UInt8>) {
        switch bytes.count {
        case 4:
            self = .v4(bytes.reduce(0) { $0 << 8 | UInt32($1) })
        case 16:
            let high = bytes.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let low = bytes.dropFirst(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            self = .v6(high: high, low: low)
        default:
            return nil
        }
    }

    /// The address in network byte order: 4 or 16 bytes.
    public var bytes: [UInt8] {
        switch self {
        case .v4(let value):
            return (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * $0)) }
        case .v6(let high, let low):
            return (0..<8).map { UInt8(truncatingIfNeeded: high >> (56 - 8 * $0)) }
                + (0..<8).map { UInt8(truncatingIfNeeded: low >> (56 - 8 * $0)) }
        }
    }

    public var isIPv4: Bool {
        if case .v4 = self { return true }
        return false
    }

    /// The IPv4 address inside an IPv4-mapped IPv6 address (`::ffff:0:0/96`, RFC 4291 §2.5.5.2),
    /// which is how a dual-stack socket reports an IPv4 client; nil for anything else.
    public var unmappedIPv4: IPAddress? {
        guard case .v6(let high, let low) = self, high == 0, low >> 32 == 0xffff else { return nil }
        return .v4(UInt32(truncatingIfNeeded: low))
    }

    /// This address as IPv6: itself, or for IPv4 its IPv4-mapped form `::ffff:a.b.c.d`.
    public var mappedIPv6: IPAddress {
        switch self {
        case .v4(let value): return .v6(high: 0, low: 0xffff_0000_0000 | UInt64(value))
        case .v6: return self
        }
    }

    public var description: String {
        switch self {
        case .v4(let value):
            return Self.dottedQuad(value)
        case .v6(let high, let low):
            if let v4 = unmappedIPv4, case .v4(let value) = v4 {
                // RFC 5952 §5: IPv4-mapped addresses keep the dotted quad.
                return "::ffff:" + Self.dottedQuad(value)
            }
            let groups =
                (0..<4).map { UInt16(truncatingIfNeeded: high >> (48 - 16 * $0)) }
                + (0..<4).map { UInt16(truncatingIfNeeded: low >> (48 - 16 * $0)) }
            return Self.canonicalIPv6(groups)
        }
    }

    // MARK: - Text forms

    private static func dottedQuad(_ value: UInt32) -> String {
        "\(value >> 24).\(value >> 16 & 0xff).\(value >> 8 & 0xff).\(value & 0xff)"
    }

    /// RFC 5952 §4.2: compress the longest run of at least two zero groups (the first of equal
    /// runs); §4.3: lower-case hex; §4.1: no leading zeros.
    private static func canonicalIPv6(_ groups: [UInt16]) -> String {
        var bestStart = -1
        var bestLength = 1
        var index = 0
        while index < groups.count {
            guard groups[index] == 0 else {
                index += 1
                continue
            }
            var end = index
            while end < groups.count && groups[end] == 0 { end += 1 }
            if end - index > bestLength {
                bestStart = index
                bestLength = end - index
            }
            index = end
        }
        let hex = groups.map { String($0, radix: 16) }
        guard bestStart >= 0 else { return hex.joined(separator: ":") }
        let head = hex[..<bestStart].joined(separator: ":")
        let tail = hex[(bestStart + bestLength)...].joined(separator: ":")
        return head + "::" + tail
    }

    // IPv4address = dec-octet "." dec-octet "." dec-octet "." dec-octet   (RFC 3986 §3.2.2)
    // dec-octet   = DIGIT / %x31-39 DIGIT / "1" 2DIGIT / "2" %x30-34 DIGIT / "25" %x30-35
    // Leading zeros are refused: inet_aton would read "010" as octal 8.
    private static func parseIPv4(_ text: ArraySlice<UInt8>) -> UInt32? {
        let parts = text.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard (1...3).contains(part.count), part.allSatisfy(isDigit) else { return nil }
            if part.count > 1 && part.first == UInt8(ascii: "0") { return nil }
            let octet = part.reduce(0) { $0 * 10 + UInt32($1 - UInt8(ascii: "0")) }
            guard octet <= 255 else { return nil }
            value = value << 8 | octet
        }
        return value
    }

    // IPv6address (RFC 4291 §2.2, as ABNF in RFC 3986 §3.2.2):
    //   h16 = 1*4HEXDIG ; ls32 = ( h16 ":" h16 ) / IPv4address
    //   at most eight 16-bit groups, at most one "::" standing for one or more zero groups,
    //   an IPv4address only in the last 32 bits.
    private static func parseIPv6(_ text: [UInt8]) -> (UInt64, UInt64)? {
        let colon = UInt8(ascii: ":")
        var head: [UInt16] = []
        var tail: [UInt16] = []
        var compressed = false
        var index = 0
        if text.starts(with: [colon, colon]) {
            compressed = true
            index = 2
        } else if text.first == colon {
            return nil
        }
        while index < text.count {
            // One group (or the final dotted quad), then ":" or "::" or the end.
            var end = index
            while end < text.count && text[end] != colon { end += 1 }
            let field = text[index..<end]
            if field.contains(UInt8(ascii: ".")) {
                guard end == text.count, let v4 = parseIPv4(field) else { return nil }
                let groups = [UInt16(v4 >> 16), UInt16(v4 & 0xffff)]
                if compressed { tail += groups } else { head += groups }
                index = end
                break
            }
            guard (1...4).contains(field.count), field.allSatisfy(isHexDigit) else { return nil }
            let group = field.reduce(UInt16(0)) { $0 << 4 | UInt16(hexValue($1)) }
            if compressed { tail.append(group) } else { head.append(group) }
            guard end < text.count else {
                index = end
                break
            }
            // A group followed by ":" must be followed by another group, or by a second ":".
            if end + 1 < text.count && text[end + 1] == colon {
                guard !compressed else { return nil }
                compressed = true
                index = end + 2
            } else {
                guard end + 1 < text.count else { return nil }
                index = end + 1
            }
        }
        let count = head.count + tail.count
        if compressed {
            guard count <= 7 else { return nil }
        } else {
            guard count == 8 else { return nil }
        }
        let groups = head + Array(repeating: 0, count: 8 - count) + tail
        let high = groups[0..<4].reduce(UInt64(0)) { $0 << 16 | UInt64($1) }
        let low = groups[4..<8].reduce(UInt64(0)) { $0 << 16 | UInt64($1) }
        return (high, low)
    }

    private static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    private static func isHexDigit(_ byte: UInt8) -> Bool {
        isDigit(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte | 0x20)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8 {
        isDigit(byte) ? byte - UInt8(ascii: "0") : (byte | 0x20) - UInt8(ascii: "a") + 10
    }
}
