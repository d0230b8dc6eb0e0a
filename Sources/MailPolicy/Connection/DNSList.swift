import DNSClient

/// One DNS blocklist or allowlist of client addresses (a DNSxL, RFC 5782): a zone under which
/// a listed address has an A record, and the weight a listing adds to the connection's score —
/// positive for a blocklist, negative for an allowlist.
public struct DNSList: Sendable, Hashable, CustomStringConvertible {
    /// The zone, lower case, without a final dot: `zen.spamhaus.org`.
    public let zone: String
    /// Added to the score when the client is listed; negative for an allowlist.
    public let weight: Int
    /// The A record values that count as "listed"; nil for any value in 127.0.0.0/8, where
    /// lists put them by convention (RFC 5782 §2.1, §2.3). Values in `errorCodes` never count,
    /// whatever this says.
    public let acceptedAnswers: [AnswerRange]?

    /// Longest zone whose IPv6 query names still fit in a domain name: 32 nibble labels take
    /// 64 octets of the 255 (RFC 1035 §3.1), the zone's wire form the rest.
    static let maximumZoneLength = 255 - 64 - 2

    /// Answers from 127.255.255.0/24 are not listings: Spamhaus uses them to say "query refused"
    /// (e.g. 127.255.255.254, asked through a public resolver) and "over the free limit"
    /// (127.255.255.255). Counting them would reject every client.
    public static let errorCodes = AnswerRange(first: 0x7FFF_FF00, last: 0x7FFF_FFFF)

    /// Where listing values live by convention (RFC 5782 §2.1: 127.0.0.2, §2.3: others).
    static let loopback = AnswerRange(first: 0x7F00_0000, last: 0x7FFF_FFFF)

    public init(zone: String, weight: Int, acceptedAnswers: [AnswerRange]? = nil) throws(DNSListError) {
        var name = zone.lowercased()
        if name.hasSuffix(".") { name.removeLast() }
        guard !name.isEmpty, name.utf8.count <= Self.maximumZoneLength, (try? DNSName(name)) != nil else {
            throw .invalidZone(zone)
        }
        self.zone = name
        self.weight = weight
        self.acceptedAnswers = acceptedAnswers
    }

    /// The name to look up for `client` (RFC 5782 §2.1 for IPv4, §2.4 for IPv6): its octets, or
    /// its 32 nibbles, in reverse order as labels, then the zone. An IPv4-mapped IPv6 address is
    /// looked up as the IPv4 address it stands for, since IPv4 lists do not carry the mapped form.
    public func queryName(for client: IPAddress) -> String {
        let address = client.unmappedIPv4 ?? client
        let labels: [String]
        switch address {
        case .v4:
            labels = address.bytes.reversed().map { "\($0)" }
        case .v6:
            labels = address.bytes.reversed().flatMap { [String($0 & 0xF, radix: 16), String($0 >> 4, radix: 16)] }
        }
        return (labels + [zone]).joined(separator: ".")
    }

    /// Whether an A record value means "listed".
    public func accepts(_ answer: IPAddress) -> Bool {
        guard !Self.errorCodes.contains(answer) else { return false }
        return (acceptedAnswers ?? [Self.loopback]).contains { $0.contains(answer) }
    }

    public var description: String {
        let answers = acceptedAnswers.map { "=" + $0.map(\.description).joined(separator: ",") } ?? ""
        return "\(zone)\(answers) (weight \(weight))"
    }

    /// A range of IPv4 A record values a list uses for a listing, such as `127.0.0.2-127.0.0.11`.
    public struct AnswerRange: Sendable, Hashable, CustomStringConvertible {
        /// The first and last value, as 32-bit numbers.
        public let first: UInt32
        public let last: UInt32

        public init(first: UInt32, last: UInt32) {
            self.first = min(first, last)
            self.last = max(first, last)
        }

        /// Parses `127.0.0.2` (one value), `127.0.0.2-127.0.0.11` (a range) or `127.0.0.0/24`,
        /// without spaces.
        public init(_ text: String) throws(DNSListError) {
            if text.contains("/") {
                guard let block = try? NetworkRange(text), case .v4(let network) = block.network else {
                    throw .invalidAnswerRange(text)
                }
                let hostBits = UInt32(truncatingIfNeeded: (UInt64(1) << (32 - block.prefixLength)) - 1)
                self.init(first: network, last: network | hostBits)
                return
            }
            let ends = text.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
            guard case .v4(let first)? = IPAddress(ends[0]) else { throw .invalidAnswerRange(text) }
            var last = first
            if ends.count == 2 {
                guard case .v4(let end)? = IPAddress(ends[1]), end >= first else {
                    throw .invalidAnswerRange(text)
                }
                last = end
            }
            self.init(first: first, last: last)
        }

        public func contains(_ address: IPAddress) -> Bool {
            guard case .v4(let value) = address.unmappedIPv4 ?? address else { return false }
            return (first...last).contains(value)
        }

        public var description: String {
            first == last ? "\(IPAddress.v4(first))" : "\(IPAddress.v4(first))-\(IPAddress.v4(last))"
        }
    }
}

/// Why a DNS list could not be configured.
public enum DNSListError: Error, Sendable, Hashable, CustomStringConvertible {
    case invalidZone(String)
    case invalidAnswerRange(String)

    public var description: String {
        switch self {
        case .invalidZone(let zone): "\"\(zone)\" is not a usable DNS list zone"
        case .invalidAnswerRange(let text):
            "\"\(text)\" is not an IPv4 address, range (a.b.c.d-e.f.g.h) or CIDR block"
        }
    }
}
