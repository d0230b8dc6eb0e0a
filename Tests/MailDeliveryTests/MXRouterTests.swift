import DNSClient
import Testing

@testable import MailDelivery

/// A resolver answering from a table: "name TYPE" → records or an error. Anything not in the
/// table is NXDOMAIN.
private struct TableResolver: Resolver {
    var records: [String: [DNSRecordData]] = [:]
    var errors: [String: DNSError] = [:]

    func query(_ name: DNSName, type: DNSRecordType) async throws(DNSError) -> DNSAnswer<[DNSRecordData]> {
        let key = "\(name.description.lowercased()) \(type)"
        if let error = errors[key] { throw error }
        guard let found = records[key] else {
            let known = records.keys.contains { $0.hasPrefix(name.description.lowercased() + " ") }
            throw known ? .noData : .nameNotFound
        }
        return DNSAnswer(value: found, authenticated: false, ttl: 300, canonicalName: name.description)
    }
}

private func mx(_ preference: UInt16, _ exchange: String) -> DNSRecordData {
    .mx(preference: preference, exchange: try! DNSName(exchange))
}

private func a(_ text: String) -> DNSRecordData { .a(IPv4Address(text)!) }
private func aaaa(_ text: String) -> DNSRecordData { .aaaa(IPv6Address(text)!) }

/// Equal preferences in reverse order, so that the tests see the shuffle was applied per group.
private let reversing: @Sendable ([RouteHost]) -> [RouteHost] = { $0.reversed() }

private func router(
    _ resolver: TableResolver, relayhost: MXRouter.Relayhost? = nil, localNames: Set<String> = ["mx.tern.test"],
    localAddresses: Set<String> = ["192.0.2.25"]
) -> MXRouter {
    MXRouter(
        resolver: resolver, port: 2525, relayhost: relayhost, localNames: localNames,
        localAddresses: localAddresses, shuffle: reversing)
}

private func routeError(_ router: MXRouter, _ domain: String) async -> RouteError? {
    do throws(RouteError) {
        _ = try await router.route(domain)
        return nil
    } catch {
        return error
    }
}

@Suite struct MXRouterTests {
    @Test func mxByPreferenceEqualsShuffledEveryAddress() async throws {
        let resolver = TableResolver(records: [
            "example.com MX": [mx(20, "b.example.com"), mx(10, "a1.example.com"), mx(10, "A2.example.com.")],
            "a1.example.com A": [a("192.0.2.1"), a("192.0.2.11")],
            "a1.example.com AAAA": [aaaa("2001:db8::1")],
            "a2.example.com A": [a("192.0.2.2")],
            "b.example.com AAAA": [aaaa("2001:db8::b")],
        ])
        let route = try await router(resolver).route("Example.COM")
        #expect(route.port == 2525)
        #expect(route.hosts.map(\.name) == ["a2.example.com", "a1.example.com", "b.example.com"])
        #expect(route.hosts.map(\.preference) == [10, 10, 20])
        #expect(route.hosts[1].addresses.map(\.description) == ["192.0.2.1", "192.0.2.11", "2001:db8::1"])
        #expect(route.hosts[2].addresses.map(\.description) == ["2001:db8::b"])
        #expect(route.problems.isEmpty)
    }

    @Test func theShuffleMixesEqualPreferences() async throws {
        let resolver = TableResolver(records: [
            "example.com MX": (0..<8).map { mx(10, "h\($0).example.com") },
            "h0.example.com A": [a("192.0.2.10")], "h1.example.com A": [a("192.0.2.11")],
            "h2.example.com A": [a("192.0.2.12")], "h3.example.com A": [a("192.0.2.13")],
            "h4.example.com A": [a("192.0.2.14")], "h5.example.com A": [a("192.0.2.15")],
            "h6.example.com A": [a("192.0.2.16")], "h7.example.com A": [a("192.0.2.17")],
        ])
        let shuffling = MXRouter(resolver: resolver)
        var firsts = Set<String>()
        for _ in 0..<40 { firsts.insert(try await shuffling.route("example.com").hosts[0].name) }
        #expect(firsts.count > 1)
    }

    @Test func implicitMXWhenThereIsNone() async throws {
        let resolver = TableResolver(records: ["plain.example A": [a("192.0.2.7")], "plain.example TXT": []])
        let route = try await router(resolver).route("plain.example")
        #expect(
            route.hosts == [
                RouteHost(name: "plain.example", preference: 0, addresses: [.v4(IPv4Address("192.0.2.7")!)])
            ])
    }

    @Test(arguments: [
        // (records, errors, domain, expected status, permanent?)
        ("nullmx", "5.1.10", true),
        ("nullmx-mixed", "5.1.10", true),
        ("missing.example", "5.1.2", true),
        ("noaddress.example", "5.1.2", true),  // no MX, and no A/AAAA either
        ("servfail.example", "4.4.3", false),
        ("deadmx.example", "5.4.4", true),  // every exchanger's name is gone
        ("flakymx.example", "4.4.3", false),  // an exchanger's address lookup timed out
        ("self.example", "5.4.6", true),
        ("selfbyaddress.example", "5.4.6", true),
        ("[192.0.2.25]", "5.4.6", true),
        ("[300.1.1.1]", "5.1.2", true),
    ])
    func failures(domain: String, status: String, permanent: Bool) async {
        let resolver = TableResolver(
            records: [
                "nullmx MX": [mx(0, ".")],
                "nullmx-mixed MX": [mx(0, "."), mx(10, "mx.example.com")],
                "noaddress.example TXT": [],
                "deadmx.example MX": [mx(10, "gone1.example"), mx(20, "gone2.example")],
                "flakymx.example MX": [mx(10, "slow.example")],
                "self.example MX": [mx(10, "mx.tern.test"), mx(20, "backup.example")],
                "selfbyaddress.example MX": [mx(10, "alias.example")],
                "alias.example A": [a("192.0.2.25")],
                "backup.example A": [a("192.0.2.99")],
            ],
            errors: ["servfail.example MX": .temporary("SERVFAIL"), "slow.example A": .temporary("timeout")])
        let error = await routeError(router(resolver), domain)
        #expect(error?.status == status, "\(String(describing: error))")
        #expect(error?.isPermanent == permanent)
    }

    /// RFC 5321 §5.1: a backup MX (this host) drops itself and everything worse, and delivers
    /// to the better ones.
    @Test func aBackupMXDropsItselfAndWorse() async throws {
        let resolver = TableResolver(records: [
            "backed.example MX": [mx(10, "primary.example"), mx(20, "mx.tern.test"), mx(30, "tertiary.example")],
            "primary.example A": [a("192.0.2.1")],
            "tertiary.example A": [a("192.0.2.3")],
        ])
        let route = try await router(resolver).route("backed.example")
        #expect(route.hosts.map(\.name) == ["primary.example"])
    }

    @Test func aSecondaryWithoutAddressIsSkippedAndNoted() async throws {
        let resolver = TableResolver(
            records: [
                "half.example MX": [mx(10, "broken.example"), mx(20, "good.example")],
                "good.example A": [a("192.0.2.2")],
            ],
            errors: ["broken.example A": .temporary("timeout"), "broken.example AAAA": .temporary("timeout")])
        let route = try await router(resolver).route("half.example")
        #expect(route.hosts.map(\.name) == ["good.example"])
        #expect(route.problems.count == 2)
    }

    @Test func addressLiterals() async throws {
        let v4 = try await router(TableResolver()).route("[192.0.2.9]")
        #expect(v4.hosts.map(\.addresses) == [[.v4(IPv4Address("192.0.2.9")!)]])
        let v6 = try await router(TableResolver()).route("[IPv6:2001:db8::9]")
        #expect(v6.hosts.map(\.addresses) == [[.v6(IPv6Address("2001:db8::9")!)]])
    }

    @Test func relayhostReplacesMXRouting() async throws {
        let resolver = TableResolver(records: [
            "smarthost.example A": [a("192.0.2.50")],
            "relay.example MX": [mx(5, "smarthost.example")],
            "example.com MX": [mx(10, "never.example")],
        ])
        let bracketed = router(resolver, relayhost: .init(host: "smarthost.example", port: 587, lookupMX: false))
        let direct = try await bracketed.route("example.com")
        #expect(direct.port == 587)
        #expect(direct.hosts.map(\.name) == ["smarthost.example"])

        let byMX = router(resolver, relayhost: .init(host: "relay.example", port: 25, lookupMX: true))
        #expect(try await byMX.route("example.com").hosts.map(\.name) == ["smarthost.example"])

        let byAddress = router(resolver, relayhost: .init(host: "192.0.2.60", port: 2525, lookupMX: false))
        #expect(try await byAddress.route("example.com").hosts.map(\.addresses) == [[.v4(IPv4Address("192.0.2.60")!)]])
    }
}
