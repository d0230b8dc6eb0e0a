/// A CIDR block such as `10.0.0.0/8` or `2001:db8::/32` (RFC 4632 §3.1, RFC 4291 §2.3):
/// an entry of `trusted_networks`. A bare address is a block of one (`/32`, `/128`).
public struct NetworkRange: Sendable, Hashable, CustomStringConvertible {
    /// The first address of the block; its host bits are zero.
    public let network: IPAddress
    /// Leading bits that every address in the block shares: 0–32 for IPv4, 0–128 for IPv6.
    public let prefixLength: Int

    /// A block from its network address; an address with host bits set is refused, since
    /// `10.1.2.3/8` is almost always a typo for `10.1.2.3/32` or `10.0.0.0/8`.
    public init(network: IPAddress, prefixLength: Int) throws(NetworkRangeError) {
        let width = network.isIPv4 ? 32 : 128
        guard (0...width).contains(prefixLength) else {
            throw .invalidPrefixLength("\(network)/\(prefixLength)")
        }
        guard Self.masked(network, prefixLength) == network else {
            throw .hostBitsSet("\(network)/\(prefixLength)", network: "\(Self.masked(network, prefixLength))")
        }
        self.network = network
        self.prefixLength = prefixLength
    }

    // CIDR = address [ "/" prefix-length ]   (RFC 4632 §3.1; RFC 4291 §2.3 for IPv6)
    /// Parses `address/length` or a bare address.
    public init(_ text: some StringProtocol) throws(NetworkRangeError) {
        let text = String(text)
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(parts[0]) else { throw .invalidAddress(text) }
        let width = address.isIPv4 ? 32 : 128
        var length = width
        if parts.count == 2 {
            let digits = parts[1]
            guard (1...3).contains(digits.count), digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber),
                let value = Int(digits), value <= width
            else { throw .invalidPrefixLength(text) }
            length = value
        }
        try self.init(network: address, prefixLength: length)
    }

    /// Whether `address` lies in this block. An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`,
    /// how a dual-stack socket reports an IPv4 client) matches the IPv4 block it maps, and an
    /// IPv4 address matches an IPv6 block that covers its mapped form.
    public func contains(_ address: IPAddress) -> Bool {
        var candidate = address
        if network.isIPv4 {
            if !address.isIPv4 {
                guard let unmapped = address.unmappedIPv4 else { return false }
                candidate = unmapped
            }
        } else if address.isIPv4 {
            candidate = address.mappedIPv6
        }
        return Self.masked(candidate, prefixLength) == network
    }

    public var description: String { "\(network)/\(prefixLength)" }

    private static func masked(_ address: IPAddress, _ length: Int) -> IPAddress {
        switch address {
        case .v4(let value):
            return .v4(length == 0 ? 0 : value & ~UInt32(0) << (32 - length))
        case .v6(let high, let low):
            let highMask: UInt64 = length >= 64 ? ~0 : (length == 0 ? 0 : ~UInt64(0) << (64 - length))
            let lowMask: UInt64 = length <= 64 ? 0 : (length >= 128 ? ~0 : ~UInt64(0) << (128 - length))
            return .v6(high: high & highMask, low: low & lowMask)
        }
    }
}

/// Why a CIDR block did not parse; `description` says it in words.
public enum NetworkRangeError: Error, Sendable, Hashable, CustomStringConvertible {
    case invalidAddress(String)
    case invalidPrefixLength(String)
    /// The address has bits set beyond the prefix; `network` is the block it probably means.
    case hostBitsSet(String, network: String)

    public var description: String {
        switch self {
        case .invalidAddress(let text): "\"\(text)\" is not an IP address or CIDR block"
        case .invalidPrefixLength(let text): "\"\(text)\" has an invalid prefix length"
        case .hostBitsSet(let text, let network): "\"\(text)\" has host bits set (did you mean \(network)?)"
        }
    }
}
