/// An IPv4 address (an A record's RDATA, RFC 1035 §3.4.1).
public struct IPv4Address: Sendable, Hashable, CustomStringConvertible {
    /// The address in host byte order: 192.0.2.1 is 0xC000_0201.
    public var rawValue: UInt32

    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        rawValue = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// Parses strict dotted-quad text: four decimal octets, no leading zeros (which some
    /// parsers read as octal), nothing else.
    public init?(_ text: String) {
        let parts = text.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard (1...3).contains(part.count), part.allSatisfy({ (0x30...0x39).contains($0) }),
                part.count == 1 || part.first != UInt8(ascii: "0")
            else { return nil }
            let octet = part.reduce(0) { $0 * 10 + UInt32($1 - 48) }
            guard octet <= 255 else { return nil }
            value = value << 8 | octet
        }
        rawValue = value
    }

    /// The four octets in network order.
    public var bytes: [UInt8] {
        [
            UInt8(rawValue >> 24), UInt8(truncatingIfNeeded: rawValue >> 16),
            UInt8(truncatingIfNeeded: rawValue >> 8), UInt8(truncatingIfNeeded: rawValue),
        ]
    }

    public var description: String { bytes.map(String.init).joined(separator: ".") }

    /// `d.c.b.a.in-addr.arpa` (RFC 1035 §3.5).
    public var reverseName: DNSName {
        DNSName(
            validatedLabels: bytes.reversed().map { Array(String($0).utf8) } + [
                Array("in-addr".utf8), Array("arpa".utf8),
            ])
    }
}

/// An IPv6 address (an AAAA record's RDATA, RFC 3596 §2.2).
public struct IPv6Address: Sendable, Hashable, CustomStringConvertible {
    /// The sixteen octets in network order.
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// Parses RFC 4291 §2.2 text: eight groups of up to four hex digits, one `::` for a run of
    /// zero groups, and optionally a dotted-quad IPv4 address in place of the last two groups.
    public init?(_ text: String) {
        var text = Substring(text)
        var tail: [UInt8] = []
        if let lastColon = text.lastIndex(of: ":"), text[lastColon...].contains(".") {
            guard let v4 = IPv4Address(String(text[text.index(after: lastColon)...])) else { return nil }
            tail = v4.bytes
            text = text[...lastColon]
            // Keep "::" intact; otherwise drop the colon that separated the IPv4 part.
            if !text.hasSuffix("::") { text = text.dropLast() }
        }
        var halves = [text]
        if let gap = text.firstRange(of: "::") {
            halves = [text[..<gap.lowerBound], text[gap.upperBound...]]
            guard halves[1].firstRange(of: "::") == nil else { return nil }
        }
        func groups(_ part: Substring) -> [UInt16]? {
            if part.isEmpty { return [] }
            var result: [UInt16] = []
            for group in part.split(separator: ":", omittingEmptySubsequences: false) {
                guard (1...4).contains(group.count), let value = UInt16(group, radix: 16),
                    group.allSatisfy(\.isHexDigit)
                else { return nil }
                result.append(value)
            }
            return result
        }
        guard let head = groups(halves[0]) else { return nil }
        let wanted = 8 - tail.count / 2
        var all: [UInt16]
        if halves.count == 2 {
            guard let back = groups(halves[1]), head.count + back.count < wanted else { return nil }
            all = head + Array(repeating: 0, count: wanted - head.count - back.count) + back
        } else {
            guard head.count == wanted else { return nil }
            all = head
        }
        bytes = all.flatMap { [UInt8($0 >> 8), UInt8(truncatingIfNeeded: $0)] } + tail
    }

    /// RFC 5952 §4 text: lowercase, no leading zeros, the longest run (two or more) of zero
    /// groups shortened to `::`, the first such run when two are equally long.
    public var description: String {
        let groups = (0..<8).map { UInt16(bytes[2 * $0]) << 8 | UInt16(bytes[2 * $0 + 1]) }
        var bestStart = -1
        var bestLength = 1
        var index = 0
        while index < 8 {
            var end = index
            while end < 8, groups[end] == 0 { end += 1 }
            if end - index > bestLength {
                bestStart = index
                bestLength = end - index
            }
            index = max(end, index + 1)
        }
        let hex = groups.map { String($0, radix: 16) }
        guard bestStart >= 0 else { return hex.joined(separator: ":") }
        return hex[..<bestStart].joined(separator: ":") + "::"
            + hex[(bestStart + bestLength)...].joined(separator: ":")
    }

    /// The 32 nibbles reversed under `ip6.arpa` (RFC 3596 §2.5).
    public var reverseName: DNSName {
        let digits = Array("0123456789abcdef".utf8)
        var labels: [[UInt8]] = []
        for byte in bytes.reversed() {
            labels.append([digits[Int(byte & 0x0F)]])
            labels.append([digits[Int(byte >> 4)]])
        }
        return DNSName(validatedLabels: labels + [Array("ip6".utf8), Array("arpa".utf8)])
    }
}
