import DNSClient

/// One address of a mail exchanger, in the order it should be tried.
public enum RouteAddress: Sendable, Hashable, CustomStringConvertible {
    case v4(IPv4Address)
    case v6(IPv6Address)

    public var description: String {
        switch self {
        case .v4(let address): address.description
        case .v6(let address): address.description
        }
    }
}

/// A mail exchanger with the addresses to try, best first.
public struct RouteHost: Sendable, Hashable {
    /// The exchanger's name (lower case, no final dot); an address literal's text for one.
    public var name: String
    public var preference: Int
    public var addresses: [RouteAddress]
    /// Every address answer carried the AD bit (RFC 4035 §3.2.3): DANE may look up the host's
    /// TLSA records (RFC 7672 §2.2.2). False for a host given as an address.
    public var addressesAuthenticated: Bool

    public init(name: String, preference: Int, addresses: [RouteAddress], addressesAuthenticated: Bool = false) {
        self.name = name
        self.preference = preference
        self.addresses = addresses
        self.addressesAuthenticated = addressesAuthenticated
    }
}

/// Where the mail for one domain goes: the hosts in the order to try them, on one port.
public struct Route: Sendable, Hashable {
    public var hosts: [RouteHost]
    public var port: Int
    /// Lookups that failed on the way without ending the route (a secondary MX whose address
    /// did not resolve), for the log and for the reply when every host then fails.
    public var problems: [String]
    /// The exchangers' names come from a DNSSEC-validated MX answer, or from no MX lookup at all
    /// (an implicit MX, a relayhost): the precondition of DANE (RFC 7672 §2.2.1) and of a
    /// REQUIRETLS delivery without MTA-STS (RFC 8689 §4.2.1).
    public var mxAuthenticated: Bool

    public init(hosts: [RouteHost], port: Int, problems: [String] = [], mxAuthenticated: Bool = false) {
        self.hosts = hosts
        self.port = port
        self.problems = problems
        self.mxAuthenticated = mxAuthenticated
    }
}

/// Why there is no route. `isPermanent` decides between a bounce and a retry; the enhanced
/// status code goes into the DSN (RFC 3463).
public enum RouteError: Error, Sendable, Hashable, CustomStringConvertible {
    /// RFC 7505: the domain publishes a null MX and accepts no mail. (5.1.10)
    case nullMX(domain: String)
    /// The domain does not exist (NXDOMAIN), or has neither MX nor address. (5.1.2)
    case domainNotFound(domain: String)
    /// Every exchanger's name failed to resolve for good. (5.4.4)
    case noAddress(domain: String, detail: String)
    /// The best exchanger is this host: the mail would loop (RFC 5321 §5.1). (5.4.6)
    case loop(domain: String, host: String)
    /// A DNS failure that may pass: defer. (4.4.3)
    case temporary(domain: String, detail: String)
    /// The domain or address literal cannot be routed at all (a malformed literal). (5.1.2)
    case invalidDestination(String)

    public var isPermanent: Bool {
        if case .temporary = self { return false }
        return true
    }

    /// The RFC 3463 status for a DSN and the log.
    public var status: String {
        switch self {
        case .nullMX: "5.1.10"
        case .domainNotFound, .invalidDestination: "5.1.2"
        case .noAddress: "5.4.4"
        case .loop: "5.4.6"
        case .temporary: "4.4.3"
        }
    }

    public var description: String {
        switch self {
        case .nullMX(let domain): "\(status) \(domain) does not accept mail (null MX, RFC 7505)"
        case .domainNotFound(let domain): "\(status) domain \(domain) not found"
        case .noAddress(let domain, let detail): "\(status) no address for any mail exchanger of \(domain): \(detail)"
        case .loop(let domain, let host): "\(status) mail for \(domain) loops back to myself (MX \(host))"
        case .temporary(let domain, let detail): "\(status) DNS lookup for \(domain) failed: \(detail)"
        case .invalidDestination(let text): "\(status) cannot route to \(text)"
        }
    }
}

/// Finds the exchangers for a domain as RFC 5321 §5.1 says (SPEC §2.3):
///
/// - MX records sorted by preference, equal preferences shuffled (spreading load as §5.1
///   asks);
/// - no MX record: the domain itself (implicit MX);
/// - a null MX (`0 .`, RFC 7505): no route, bounce at once;
/// - this host among the exchangers: every exchanger at its preference or worse is dropped, and
///   if this host was the best, the mail loops;
/// - every address of every exchanger, IPv4 first, then IPv6;
/// - `relayhost` instead of MX routing when configured (`[host]` as is, `host` by its MX).
///
/// Results say whether a failure is permanent (bounce) or temporary (defer).
public struct MXRouter: Sendable {
    /// `[delivery] relayhost`, in Postfix's notation: `[host]:port` sends everything to that
    /// host; `host:port` without brackets looks up the MX records of `host` first.
    public struct Relayhost: Sendable, Hashable, CustomStringConvertible {
        public var host: String
        public var port: Int
        /// False for `[host]` (and for IP addresses): connect to `host` itself.
        public var lookupMX: Bool

        public init(host: String, port: Int = 25, lookupMX: Bool = false) {
            self.host = host
            self.port = port
            self.lookupMX = lookupMX
        }

        public var description: String {
            lookupMX ? "\(host):\(port)" : "[\(host)]:\(port)"
        }
    }

    public var resolver: any Resolver
    /// `[delivery] remote_port`.
    public var port: Int
    public var relayhost: Relayhost?
    /// Names that are this host (lower case, no final dot): our `hostname` at least.
    public var localNames: Set<String>
    /// Addresses that are this host, as text (`192.0.2.25`, `2001:db8::25`).
    public var localAddresses: Set<String>
    /// Exchangers tried at most (RFC 5321 §5.1 lets a client bound them).
    public var maximumHosts: Int
    /// Shuffles exchangers of equal preference; tests pass a fixed order.
    public var shuffle: @Sendable ([RouteHost]) -> [RouteHost]

    public init(
        resolver: any Resolver, port: Int = 25, relayhost: Relayhost? = nil, localNames: Set<String> = [],
        localAddresses: Set<String> = [], maximumHosts: Int = 10,
        shuffle: @escaping @Sendable ([RouteHost]) -> [RouteHost] = { $0.shuffled() }
    ) {
        self.resolver = resolver
        self.port = port
        self.relayhost = relayhost
        self.localNames = Set(localNames.map { Self.normalized($0) })
        self.localAddresses = localAddresses
        self.maximumHosts = max(1, maximumHosts)
        self.shuffle = shuffle
    }

    /// The route for mail to `domain` (a domain name, or an address literal such as
    /// `[192.0.2.1]` or `[IPv6:2001:db8::1]`).
    public func route(_ domain: String) async throws(RouteError) -> Route {
        if let relayhost {
            if !relayhost.lookupMX, let address = Self.address(relayhost.host) {
                return Route(
                    hosts: [RouteHost(name: relayhost.host, preference: 0, addresses: [address])], port: relayhost.port)
            }
            return try await route(
                Self.normalized(relayhost.host), port: relayhost.port, lookupMX: relayhost.lookupMX, for: domain)
        }
        if domain.hasPrefix("[") {
            guard domain.hasSuffix("]"), let address = Self.literal(domain) else { throw .invalidDestination(domain) }
            if localAddresses.contains(address.description) { throw .loop(domain: domain, host: domain) }
            return Route(hosts: [RouteHost(name: domain, preference: 0, addresses: [address])], port: port)
        }
        return try await route(Self.normalized(domain), port: port, lookupMX: true, for: domain)
    }

    private func route(
        _ name: String, port: Int, lookupMX: Bool, for domain: String
    ) async throws(RouteError) -> Route {
        var implicit = !lookupMX
        var nullMX = false
        var candidates: [RouteHost] = []
        // An implicit MX names the domain itself: its address answers alone decide (RFC 7672 §2.2.1).
        var mxAuthenticated = true
        if lookupMX {
            do throws(DNSError) {
                let answer = try await resolver.mx(name)
                mxAuthenticated = answer.authenticated
                let records = answer.value
                // RFC 7505 §3: a null MX says "no mail", whatever else is published beside it.
                if records.contains(where: \.isNullMX) {
                    nullMX = true
                } else {
                    candidates = records.map {
                        RouteHost(name: Self.normalized($0.exchange), preference: Int($0.preference), addresses: [])
                    }
                }
            } catch .nameNotFound {
                throw .domainNotFound(domain: domain)
            } catch .noData {
                implicit = true
                mxAuthenticated = true
            } catch let error where error.isTemporary {
                throw .temporary(domain: domain, detail: "MX: \(error)")
            } catch {
                throw .invalidDestination(domain)
            }
        }
        if nullMX { throw .nullMX(domain: domain) }
        if implicit { candidates = [RouteHost(name: name, preference: 0, addresses: [])] }

        // Sorted by preference, each group of equals shuffled.
        var ordered: [RouteHost] = []
        for preference in Set(candidates.map(\.preference)).sorted() {
            ordered += shuffle(candidates.filter { $0.preference == preference })
        }
        // RFC 5321 §5.1: this host among the exchangers drops itself and everything as bad.
        if let ours = ordered.first(where: { localNames.contains($0.name) }) {
            ordered = ordered.filter { $0.preference < ours.preference }
            if ordered.isEmpty { throw .loop(domain: domain, host: ours.name) }
        }
        ordered = Array(ordered.prefix(maximumHosts))

        let lookups = await resolveAll(ordered)
        var hosts: [RouteHost] = []
        var problems: [String] = []
        var temporary = false
        for (host, lookup) in zip(ordered, lookups) {
            problems += lookup.problems
            temporary = temporary || lookup.temporary
            if let local = lookup.addresses.first(where: { localAddresses.contains($0.description) }) {
                // An exchanger by another name that is still this host.
                hosts = hosts.filter { $0.preference < host.preference }
                guard !hosts.isEmpty else { throw .loop(domain: domain, host: "\(host.name) [\(local)]") }
                break
            }
            if !lookup.addresses.isEmpty {
                hosts.append(
                    RouteHost(
                        name: host.name, preference: host.preference, addresses: lookup.addresses,
                        addressesAuthenticated: lookup.authenticated))
            }
        }
        guard hosts.isEmpty else {
            return Route(hosts: hosts, port: port, problems: problems, mxAuthenticated: mxAuthenticated)
        }
        let detail = problems.joined(separator: "; ")
        if temporary { throw .temporary(domain: domain, detail: detail) }
        if implicit && lookupMX { throw .domainNotFound(domain: domain) }
        throw .noAddress(domain: domain, detail: detail)
    }

    private struct HostLookup: Sendable {
        var addresses: [RouteAddress] = []
        var problems: [String] = []
        var temporary = false
        /// Every answer that gave addresses carried the AD bit.
        var authenticated = false
    }

    /// A and AAAA of every exchanger at once; results in the exchangers' order.
    private func resolveAll(_ hosts: [RouteHost]) async -> [HostLookup] {
        let resolver = self.resolver
        return await withTaskGroup(of: (Int, HostLookup).self) { group in
            for (index, host) in hosts.enumerated() {
                group.addTask {
                    if let address = Self.address(host.name) { return (index, HostLookup(addresses: [address])) }
                    async let v4 = Self.lookup { () async throws(DNSError) in
                        let answer = try await resolver.a(host.name)
                        return (answer.value.map(RouteAddress.v4), answer.authenticated)
                    }
                    async let v6 = Self.lookup { () async throws(DNSError) in
                        let answer = try await resolver.aaaa(host.name)
                        return (answer.value.map(RouteAddress.v6), answer.authenticated)
                    }
                    var result = HostLookup()
                    var secure = true
                    for (type, outcome) in [("A", await v4), ("AAAA", await v6)] {
                        switch outcome {
                        case .success(let (addresses, authenticated)):
                            result.addresses += addresses
                            secure = secure && authenticated
                        case .failure(.noData):
                            break  // an IPv4-only or IPv6-only host
                        case .failure(let error):
                            result.problems.append("\(host.name) \(type): \(error)")
                            result.temporary = result.temporary || error.isTemporary
                        }
                    }
                    if result.addresses.isEmpty && result.problems.isEmpty {
                        result.problems.append("\(host.name) has no A or AAAA record")
                    }
                    result.authenticated = secure && !result.addresses.isEmpty
                    return (index, result)
                }
            }
            var results = [HostLookup](repeating: HostLookup(), count: hosts.count)
            for await (index, result) in group { results[index] = result }
            return results
        }
    }

    private static func lookup(
        _ body: @Sendable () async throws(DNSError) -> ([RouteAddress], Bool)
    ) async -> Result<([RouteAddress], Bool), DNSError> {
        do throws(DNSError) {
            return .success(try await body())
        } catch {
            return .failure(error)
        }
    }

    /// `[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 §4.1.3).
    static func literal(_ text: String) -> RouteAddress? {
        let inner = text.dropFirst().dropLast()
        if inner.lowercased().hasPrefix("ipv6:") { return IPv6Address(String(inner.dropFirst(5))).map(RouteAddress.v6) }
        return IPv4Address(String(inner)).map(RouteAddress.v4)
    }

    /// A host given as an IP address (a relayhost, an exchanger named by its address).
    static func address(_ text: String) -> RouteAddress? {
        if let v4 = IPv4Address(text) { return .v4(v4) }
        let bare = text.hasPrefix("[") && text.hasSuffix("]") ? String(text.dropFirst().dropLast()) : text
        return IPv6Address(bare).map(RouteAddress.v6)
    }

    static func normalized(_ name: String) -> String {
        var name = name.lowercased()
        while name.hasSuffix(".") && name.count > 1 { name.removeLast() }
        return name
    }
}
