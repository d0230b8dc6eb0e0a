import DNSClient

/// The client's confirmed host name (forward-confirmed reverse DNS, FCrDNS): a PTR name for
/// the address whose own A/AAAA records contain the address again. Anything else — no PTR, a
/// name that does not point back, a DNS failure — is "unknown", as Postfix writes it.
public enum ReverseName {
    /// At most this many PTR names are checked (RFC 7208 §5.5 uses 10 for SPF; a client with
    /// more is not worth the lookups).
    static let maximumNames = 3

    /// Never takes longer than `limit`, whatever the DNS servers do: a dead resolver must not
    /// stall sessions. The hosts file answers first, as it does for the system resolver, so
    /// loopback and local hosts never wait for DNS.
    public static func confirmed(
        for address: String, resolver: any Resolver, hosts: HostsFile = .system, limit: Duration = .seconds(3)
    ) async -> String? {
        if let name = fromHosts(address, hosts: hosts) { return name }
        return await withTimeLimit(limit) {
            await lookup(address, resolver: resolver)
        } ?? nil
    }

    /// The name the hosts file gives `address` (an IPv4-mapped IPv6 address as IPv4), at once.
    public static func fromHosts(_ address: String, hosts: HostsFile = .system) -> String? {
        if let name = hosts.names(for: address).first { return name }
        if let client = IPAddress(address)?.unmappedIPv4 { return hosts.names(for: "\(client)").first }
        return nil
    }

    static func lookup(_ address: String, resolver: any Resolver) async -> String? {
        guard let client = IPAddress(address)?.unmappedIPv4 ?? IPAddress(address) else { return nil }
        guard let names = try? await resolver.ptr("\(client)").value else { return nil }
        for name in names.prefix(maximumNames) {
            let forward: [String]
            if client.isIPv4 {
                forward = ((try? await resolver.a(name).value) ?? []).map { "\($0)" }
            } else {
                forward = ((try? await resolver.aaaa(name).value) ?? []).map { "\($0)" }
            }
            if forward.contains(where: { IPAddress($0) == client }) {
                return name.hasSuffix(".") ? String(name.dropLast()) : name
            }
        }
        return nil
    }
}
