/// An answer and what the resolver said about it.
public struct DNSAnswer<Value: Sendable>: Sendable {
    public var value: Value
    /// The AD bit (RFC 4035 §3.2.3): the recursive resolver validated the answer with DNSSEC.
    /// Only as trustworthy as the path to the resolver (RFC 6698 §4 wants it local or secured).
    public var authenticated: Bool
    /// The smallest TTL of the records used, CNAMEs included: how long the answer may be kept.
    public var ttl: UInt32
    /// The owner name of the records after following CNAMEs; the asked name when there were none.
    public var canonicalName: String

    public init(value: Value, authenticated: Bool, ttl: UInt32, canonicalName: String) {
        self.value = value
        self.authenticated = authenticated
        self.ttl = ttl
        self.canonicalName = canonicalName
    }

    /// The same answer with its value transformed.
    public func map<T: Sendable>(_ transform: (Value) throws(DNSError) -> T) throws(DNSError) -> DNSAnswer<T> {
        DNSAnswer<T>(
            value: try transform(value), authenticated: authenticated, ttl: ttl,
            canonicalName: canonicalName)
    }
}

extension DNSAnswer: Equatable where Value: Equatable {}
extension DNSAnswer: Hashable where Value: Hashable {}

/// One MX record (RFC 1035 §3.3.9) as mail routing needs it.
public struct MXRecord: Sendable, Hashable, CustomStringConvertible {
    public var preference: UInt16
    /// The mail exchanger's name without the final dot; `.` for a null MX.
    public var exchange: String

    public init(preference: UInt16, exchange: String) {
        self.preference = preference
        self.exchange = exchange
    }

    /// RFC 7505 §3: `0 .` says the domain accepts no mail.
    public var isNullMX: Bool { preference == 0 && exchange == "." }

    public var description: String { "\(preference) \(exchange)" }
}

/// The DNS as the rest of Tern sees it. `StubResolver` asks a recursive server; tests can
/// implement `query` alone and get the typed lookups from the default implementations.
///
/// Every method either returns at least one record or throws: `.nameNotFound` and `.noData`
/// are permanent, `.temporary` and `.malformed` mean "try again later" (`DNSError.isTemporary`).
public protocol Resolver: Sendable {
    /// The records of `type` at `name`, after following CNAMEs.
    func query(_ name: DNSName, type: DNSRecordType) async throws(DNSError) -> DNSAnswer<[DNSRecordData]>
    /// MX records in the order received; sorting and shuffling are routing's business.
    func mx(_ domain: String) async throws(DNSError) -> DNSAnswer<[MXRecord]>
    func a(_ name: String) async throws(DNSError) -> DNSAnswer<[IPv4Address]>
    func aaaa(_ name: String) async throws(DNSError) -> DNSAnswer<[IPv6Address]>
    /// One string per TXT record, its character-strings concatenated (RFC 7208 §3.3), decoded
    /// as UTF-8 with invalid sequences replaced by U+FFFD.
    func txt(_ name: String) async throws(DNSError) -> DNSAnswer<[String]>
    /// PTR names for an IP address in text form ("192.0.2.1", "2001:db8::1"), without the
    /// final dot. The reverse name is built under in-addr.arpa or ip6.arpa.
    func ptr(_ address: String) async throws(DNSError) -> DNSAnswer<[String]>
    func tlsa(_ name: String) async throws(DNSError) -> DNSAnswer<[TLSARecord]>
}

extension Resolver {
    public func mx(_ domain: String) async throws(DNSError) -> DNSAnswer<[MXRecord]> {
        try await query(Self.name(domain), type: .mx).map { records in
            records.compactMap {
                guard case .mx(let preference, let exchange) = $0 else { return nil }
                return MXRecord(preference: preference, exchange: exchange.description)
            }
        }
    }

    public func a(_ name: String) async throws(DNSError) -> DNSAnswer<[IPv4Address]> {
        try await query(Self.name(name), type: .a).map { records in
            records.compactMap {
                guard case .a(let address) = $0 else { return nil }
                return address
            }
        }
    }

    public func aaaa(_ name: String) async throws(DNSError) -> DNSAnswer<[IPv6Address]> {
        try await query(Self.name(name), type: .aaaa).map { records in
            records.compactMap {
                guard case .aaaa(let address) = $0 else { return nil }
                return address
            }
        }
    }

    public func txt(_ name: String) async throws(DNSError) -> DNSAnswer<[String]> {
        try await query(Self.name(name), type: .txt).map { records in
            records.compactMap {
                guard case .txt(let strings) = $0 else { return nil }
                return String(decoding: strings.joined(), as: UTF8.self)
            }
        }
    }

    public func ptr(_ address: String) async throws(DNSError) -> DNSAnswer<[String]> {
        let reverse: DNSName
        if let v4 = IPv4Address(address) {
            reverse = v4.reverseName
        } else if let v6 = IPv6Address(address) {
            reverse = v6.reverseName
        } else {
            throw .invalidInput("not an IP address: \(address)")
        }
        return try await query(reverse, type: .ptr).map { records in
            records.compactMap {
                guard case .ptr(let name) = $0 else { return nil }
                return name.description
            }
        }
    }

    public func tlsa(_ name: String) async throws(DNSError) -> DNSAnswer<[TLSARecord]> {
        try await query(Self.name(name), type: .tlsa).map { records in
            records.compactMap {
                guard case .tlsa(let record) = $0 else { return nil }
                return record
            }
        }
    }

    private static func name(_ text: String) throws(DNSError) -> DNSName {
        do {
            return try DNSName(text)
        } catch {
            throw .invalidInput("not a domain name: \(text)")
        }
    }
}
