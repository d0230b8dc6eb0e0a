import NIOCore

/// A resource record TYPE (RFC 1035 §3.2.2, RFC 3596, RFC 6891, RFC 6698).
public struct DNSRecordType: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let a = DNSRecordType(rawValue: 1)
    public static let ns = DNSRecordType(rawValue: 2)
    public static let cname = DNSRecordType(rawValue: 5)
    public static let soa = DNSRecordType(rawValue: 6)
    public static let ptr = DNSRecordType(rawValue: 12)
    public static let mx = DNSRecordType(rawValue: 15)
    public static let txt = DNSRecordType(rawValue: 16)
    public static let aaaa = DNSRecordType(rawValue: 28)
    public static let opt = DNSRecordType(rawValue: 41)
    public static let rrsig = DNSRecordType(rawValue: 46)
    public static let tlsa = DNSRecordType(rawValue: 52)

    /// The mnemonic, or `TYPEn` (RFC 3597 §5) for types this client does not know.
    public var description: String {
        switch self {
        case .a: "A"
        case .ns: "NS"
        case .cname: "CNAME"
        case .soa: "SOA"
        case .ptr: "PTR"
        case .mx: "MX"
        case .txt: "TXT"
        case .aaaa: "AAAA"
        case .opt: "OPT"
        case .rrsig: "RRSIG"
        case .tlsa: "TLSA"
        default: "TYPE\(rawValue)"
        }
    }
}

/// RFC 1035 §3.2.4: CLASS IN, the only class whose RDATA this client decodes.
public let dnsClassIN: UInt16 = 1

/// One resource record (RFC 1035 §4.1.3). OPT is not one of these: see `OPTRecord`.
public struct DNSResourceRecord: Sendable, Hashable {
    public var name: DNSName
    public var dnsClass: UInt16
    public var ttl: UInt32
    public var data: DNSRecordData

    public init(name: DNSName, dnsClass: UInt16 = dnsClassIN, ttl: UInt32, data: DNSRecordData) {
        self.name = name
        self.dnsClass = dnsClass
        self.ttl = ttl
        self.data = data
    }

    public var type: DNSRecordType { data.type }
}

/// SOA RDATA (RFC 1035 §3.3.13); `minimum` is the negative-caching TTL (RFC 2308 §4).
public struct SOARecord: Sendable, Hashable {
    public var primaryServer: DNSName
    public var responsibleMailbox: DNSName
    public var serial: UInt32
    public var refresh: UInt32
    public var retry: UInt32
    public var expire: UInt32
    public var minimum: UInt32

    public init(
        primaryServer: DNSName, responsibleMailbox: DNSName, serial: UInt32, refresh: UInt32,
        retry: UInt32, expire: UInt32, minimum: UInt32
    ) {
        self.primaryServer = primaryServer
        self.responsibleMailbox = responsibleMailbox
        self.serial = serial
        self.refresh = refresh
        self.retry = retry
        self.expire = expire
        self.minimum = minimum
    }
}

/// TLSA RDATA (RFC 6698 §2.1): certificate usage, selector, matching type, association data.
public struct TLSARecord: Sendable, Hashable {
    public var usage: UInt8
    public var selector: UInt8
    public var matchingType: UInt8
    public var data: [UInt8]

    public init(usage: UInt8, selector: UInt8, matchingType: UInt8, data: [UInt8]) {
        self.usage = usage
        self.selector = selector
        self.matchingType = matchingType
        self.data = data
    }
}

/// Decoded RDATA for the types mail needs; any other type (or class) keeps its raw octets.
public enum DNSRecordData: Sendable, Hashable {
    case a(IPv4Address)
    case aaaa(IPv6Address)
    case ns(DNSName)
    case cname(DNSName)
    case ptr(DNSName)
    case mx(preference: UInt16, exchange: DNSName)
    /// The `<character-string>`s of one TXT record, in order (RFC 1035 §3.3.14).
    case txt([[UInt8]])
    case soa(SOARecord)
    case tlsa(TLSARecord)
    case unknown(type: DNSRecordType, bytes: [UInt8])

    public var type: DNSRecordType {
        switch self {
        case .a: .a
        case .aaaa: .aaaa
        case .ns: .ns
        case .cname: .cname
        case .ptr: .ptr
        case .mx: .mx
        case .txt: .txt
        case .soa: .soa
        case .tlsa: .tlsa
        case .unknown(let type, _): type
        }
    }

    /// Writes the RDATA, names uncompressed (RFC 3597 §4 forbids compressing new types anyway).
    public func write(to buffer: inout ByteBuffer) {
        switch self {
        case .a(let address):
            buffer.writeInteger(address.rawValue)
        case .aaaa(let address):
            buffer.writeBytes(address.bytes)
        case .ns(let name), .cname(let name), .ptr(let name):
            name.write(to: &buffer)
        case .mx(let preference, let exchange):
            buffer.writeInteger(preference)
            exchange.write(to: &buffer)
        case .txt(let strings):
            for string in strings {
                // A character-string is at most 255 octets; longer input is split, as zone
                // file tools do, so the encoder never writes a wrong length octet.
                var rest = string[...]
                repeat {
                    let chunk = rest.prefix(255)
                    buffer.writeInteger(UInt8(chunk.count))
                    buffer.writeBytes(chunk)
                    rest = rest.dropFirst(chunk.count)
                } while !rest.isEmpty
            }
        case .soa(let soa):
            soa.primaryServer.write(to: &buffer)
            soa.responsibleMailbox.write(to: &buffer)
            for value in [soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum] {
                buffer.writeInteger(value)
            }
        case .tlsa(let tlsa):
            buffer.writeInteger(tlsa.usage)
            buffer.writeInteger(tlsa.selector)
            buffer.writeInteger(tlsa.matchingType)
            buffer.writeBytes(tlsa.data)
        case .unknown(_, let bytes):
            buffer.writeBytes(bytes)
        }
    }
}
