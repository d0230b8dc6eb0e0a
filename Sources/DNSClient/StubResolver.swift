import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A stub resolver (RFC 1034 §5.3.1): sends recursive queries to the configured servers over
/// UDP, falls back to TCP when the reply is truncated, and classifies the outcome.
///
/// Each try (one server, one round) costs at most `timeout`, plus one more `timeout` for the
/// TCP exchange when a UDP reply came back truncated. A lookup makes `attempts` rounds over
/// `servers` in order, so it ends within `timeout × attempts × servers.count` when nobody
/// answers. Mismatching datagrams (wrong source, ID or question) are ignored, not fatal.
public struct StubResolver: Resolver {
    public let servers: [SocketAddress]
    public let timeout: Duration
    public let attempts: Int
    public let eventLoopGroup: any EventLoopGroup
    /// Outcomes kept for their TTL; nil asks the servers every time.
    public let cache: DNSCache?

    public init(
        servers: [SocketAddress], timeout: Duration = DNSLimits.timeout,
        attempts: Int = DNSLimits.attempts,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, cache: DNSCache? = nil
    ) {
        self.servers = servers
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.eventLoopGroup = eventLoopGroup
        self.cache = cache
    }

    /// Servers as numeric text: `192.0.2.53`, `192.0.2.53:5353`, `2001:db8::53`,
    /// `[2001:db8::53]:5353`. No host names: resolving them would need a resolver.
    public init(
        servers: [String], timeout: Duration = DNSLimits.timeout,
        attempts: Int = DNSLimits.attempts,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, cache: DNSCache? = nil
    ) throws(DNSError) {
        var addresses: [SocketAddress] = []
        for server in servers {
            addresses.append(try Self.serverAddress(server))
        }
        self.init(
            servers: addresses, timeout: timeout, attempts: attempts, eventLoopGroup: eventLoopGroup,
            cache: cache)
    }

    /// Parses one server address in the forms `init(servers:)` accepts; port 53 by default.
    public static func serverAddress(_ text: String) throws(DNSError) -> SocketAddress {
        var host = Substring(text)
        var port = DNSLimits.port
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else {
                throw .invalidInput("bad server address: \(text)")
            }
            let rest = host[host.index(after: close)...]
            host = host[host.index(after: host.startIndex)..<close]
            if !rest.isEmpty {
                guard rest.hasPrefix(":"), let value = Int(rest.dropFirst()) else {
                    throw .invalidInput("bad server address: \(text)")
                }
                port = value
            }
        } else if host.filter({ $0 == ":" }).count == 1, let colon = host.firstIndex(of: ":") {
            guard let value = Int(host[host.index(after: colon)...]) else {
                throw .invalidInput("bad server address: \(text)")
            }
            port = value
            host = host[..<colon]
        }
        guard (1...65535).contains(port),
            IPv4Address(String(host)) != nil || IPv6Address(String(host)) != nil,
            let address = try? SocketAddress(ipAddress: String(host), port: port)
        else {
            throw .invalidInput("bad server address: \(text)")
        }
        return address
    }

    /// The `nameserver` lines of resolv.conf(5) as `host:port` text (`[v6]:53` for IPv6);
    /// `127.0.0.1:53` when the file is missing or names none.
    public static func systemServers(resolvConf: String = "/etc/resolv.conf") -> [String] {
        let servers = nameservers(inResolvConf: readFile(resolvConf) ?? "")
        return servers.isEmpty ? ["127.0.0.1:53"] : servers
    }

    /// The `nameserver` addresses in resolv.conf text, skipping comments and unusable entries
    /// (such as link-local addresses with a zone).
    public static func nameservers(inResolvConf text: String) -> [String] {
        var servers: [String] = []
        for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 2, fields[0] == "nameserver" else { continue }
            let host = String(fields[1])
            if IPv4Address(host) != nil {
                servers.append("\(host):\(DNSLimits.port)")
            } else if let v6 = IPv6Address(host) {
                servers.append("[\(v6)]:\(DNSLimits.port)")
            }
        }
        return servers
    }

    private static func readFile(_ path: String) -> String? {
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var contents: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while contents.count < 1 << 20 {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            guard count > 0 else { break }
            contents += chunk[..<count]
        }
        return String(decoding: contents, as: UTF8.self)
    }

    // MARK: Lookup

    /// Every typed lookup comes through here, and through the cache when there is one: a cached
    /// outcome, else the outcome of the same lookup already under way, else a new exchange.
    public func query(_ name: DNSName, type: DNSRecordType) async throws(DNSError) -> DNSAnswer<[DNSRecordData]> {
        guard let cache else { return try await resolve(name, type: type) }
        while true {
            if let cached = cache.lookup(name, type: type) { return try cached.get() }
            switch await cache.joinLookup(name, type: type) {
            case .lead:
                let outcome: DNSCache.Outcome
                do throws(DNSError) {
                    outcome = .success(try await resolve(name, type: type))
                } catch {
                    outcome = .failure(error)
                }
                cache.finishLookup(name, type: type, outcome)
                return try outcome.get()
            case .follow(let outcome?):
                return try outcome.get()
            case .follow(nil):
                continue
            }
        }
    }

    /// One lookup from the servers; its outcome goes into the cache as RFC 2308 allows.
    private func resolve(_ name: DNSName, type: DNSRecordType) async throws(DNSError) -> DNSAnswer<[DNSRecordData]> {
        let reply = try await exchange(name: name, type: type)
        do throws(DNSError) {
            let answer = try Self.answer(from: reply, name: name, type: type)
            cache?.store(answer, for: name, type: type)
            return answer
        } catch {
            if let cache, let ttl = DNSCache.negativeTTL(of: reply) {
                cache.storeNegative(error, ttl: ttl, for: name, type: type)
            }
            throw error
        }
    }

    /// Asks the servers in order, `attempts` rounds, until one gives a definite reply
    /// (NOERROR or NXDOMAIN). Returns that reply; throws the last failure otherwise.
    func exchange(name: DNSName, type: DNSRecordType) async throws(DNSError) -> DNSMessage {
        var failure = DNSError.temporary("no name servers configured")
        for _ in 0..<attempts {
            for server in servers {
                if Task.isCancelled { throw .temporary("lookup cancelled") }
                // A fresh random ID (and, by the kernel, a fresh random port) per try: an
                // off-path spoofer must guess both (RFC 5452 §9.2).
                let query = DNSMessage.query(id: UInt16.random(in: .min ... .max), name: name, type: type)
                do throws(DNSError) {
                    var reply = try await DNSTransport.udp(
                        query, server: server, timeout: timeout, group: eventLoopGroup)
                    if reply.header.isTruncated {
                        reply = try await DNSTransport.tcp(
                            query, server: server, timeout: timeout, group: eventLoopGroup)
                    }
                    switch reply.responseCode {
                    case .noError, .nameError:
                        return reply
                    default:
                        failure = .temporary("\(server) answered \(reply.responseCode)")
                    }
                } catch {
                    failure = error
                }
            }
        }
        throw failure
    }

    /// Reads the answer to `name`/`type` out of a NOERROR or NXDOMAIN reply, following CNAMEs
    /// within the answer section (RFC 1034 §3.6.2) up to `DNSLimits.cnameChain` links.
    public static func answer(
        from reply: DNSMessage, name: DNSName, type: DNSRecordType
    ) throws(DNSError) -> DNSAnswer<[DNSRecordData]> {
        switch reply.responseCode {
        case .noError: break
        case .nameError: throw .nameNotFound
        default: throw .temporary("server answered \(reply.responseCode)")
        }
        var owner = name
        var ttl = UInt32.max
        var links = 0
        while true {
            let records = reply.answers.filter {
                $0.name == owner && $0.type == type && $0.dnsClass == dnsClassIN
            }
            if !records.isEmpty {
                return DNSAnswer(
                    value: records.map(\.data), authenticated: reply.header.authenticData,
                    ttl: min(ttl, records.map(\.ttl).min()!), canonicalName: owner.description)
            }
            guard type != .cname,
                let alias = reply.answers.first(where: { $0.name == owner && $0.type == .cname }),
                case .cname(let target) = alias.data
            else {
                throw .noData
            }
            links += 1
            guard links <= DNSLimits.cnameChain else {
                throw .malformed("CNAME chain from \(name) longer than \(DNSLimits.cnameChain)")
            }
            ttl = min(ttl, alias.ttl)
            owner = target
        }
    }
}
