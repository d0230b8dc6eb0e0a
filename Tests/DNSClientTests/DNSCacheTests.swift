import Synchronization
import Testing

@testable import DNSClient

/// A clock the test moves by hand, in seconds.
private final class ManualClock: Sendable {
    private let seconds = Mutex<UInt64>(1000)
    func advance(_ by: UInt64) { seconds.withLock { $0 += by } }
    var nanoseconds: UInt64 { seconds.withLock { $0 } * 1_000_000_000 }
}

private func cache(capacity: Int = 100, clock: ManualClock) -> DNSCache {
    DNSCache(capacity: capacity, maximumTTL: 3600, maximumNegativeTTL: 600, clock: { clock.nanoseconds })
}

private func answer(ttl: UInt32, _ address: IPv4Address = IPv4Address(192, 0, 2, 1)) -> DNSAnswer<[DNSRecordData]> {
    DNSAnswer(value: [.a(address)], authenticated: true, ttl: ttl, canonicalName: "host.example.com")
}

@Suite struct DNSCacheTests {
    @Test func answersAreKeptForTheirTTLCountingDown() throws {
        let clock = ManualClock()
        let cache = cache(clock: clock)
        cache.store(answer(ttl: 300), for: "Host.Example.com", type: .a)
        clock.advance(100)
        // Names compare without regard to case (RFC 4343).
        let cached = try #require(cache.lookup("host.example.COM", type: .a))
        #expect(try cached.get() == answer(ttl: 200))
        #expect(cache.lookup("host.example.com", type: .aaaa) == nil)
        clock.advance(200)
        #expect(cache.lookup("host.example.com", type: .a) == nil)
        #expect(cache.count == 0)
    }

    @Test(arguments: [
        // (TTL given, seconds later, still cached?)
        (UInt32(0), UInt64(0), false),  // TTL 0: use once, never keep (RFC 1035 §3.2.1)
        (1, 0, true),
        (1, 1, false),
        (86_400, 3599, true),  // capped at maximumTTL = 3600
        (86_400, 3600, false),
    ])
    func ttlBounds(ttl: UInt32, later: UInt64, kept: Bool) {
        let clock = ManualClock()
        let cache = cache(clock: clock)
        cache.store(answer(ttl: ttl), for: "a.example", type: .a)
        clock.advance(later)
        #expect((cache.lookup("a.example", type: .a) != nil) == kept)
    }

    @Test func permanentNegativesAreKeptTemporaryFailuresNever() throws {
        let clock = ManualClock()
        let cache = cache(clock: clock)
        cache.storeNegative(.nameNotFound, ttl: 300, for: "gone.example", type: .mx)
        cache.storeNegative(.noData, ttl: 10_000, for: "nomx.example", type: .mx)
        cache.storeNegative(.temporary("SERVFAIL"), ttl: 300, for: "flaky.example", type: .mx)
        cache.storeNegative(.malformed("junk"), ttl: 300, for: "junk.example", type: .mx)
        #expect(cache.lookup("gone.example", type: .mx).map { (try? $0.get()) == nil } == true)
        guard case .failure(.nameNotFound) = cache.lookup("gone.example", type: .mx) else {
            Issue.record("NXDOMAIN not cached")
            return
        }
        #expect(cache.lookup("flaky.example", type: .mx) == nil)
        #expect(cache.lookup("junk.example", type: .mx) == nil)
        clock.advance(599)  // the negative cap is 600 s
        guard case .failure(.noData) = cache.lookup("nomx.example", type: .mx) else {
            Issue.record("NODATA not cached up to the cap")
            return
        }
        clock.advance(1)
        #expect(cache.lookup("nomx.example", type: .mx) == nil)
    }

    @Test func capacityIsBoundedExpiredEntriesFirst() {
        let clock = ManualClock()
        let cache = cache(capacity: 10, clock: clock)
        for index in 0..<5 { cache.store(answer(ttl: 10), for: try! DNSName("old\(index).example"), type: .a) }
        clock.advance(20)
        for index in 0..<5 { cache.store(answer(ttl: 100), for: try! DNSName("new\(index).example"), type: .a) }
        // Full: the five expired entries make room, the live ones stay.
        cache.store(answer(ttl: 100), for: "one-more.example", type: .a)
        #expect(cache.count == 6)
        for index in 0..<5 { #expect(cache.lookup(try! DNSName("new\(index).example"), type: .a) != nil) }
        for index in 0..<100 { cache.store(answer(ttl: 100), for: try! DNSName("n\(index).example"), type: .a) }
        #expect(cache.count <= 10)
    }

    @Test func negativeTTLComesFromTheSOA() {
        var reply = DNSMessage(header: DNSHeader(id: 1, isResponse: true, rcode: 3))
        #expect(DNSCache.negativeTTL(of: reply) == nil)
        let soa = SOARecord(
            primaryServer: "ns.example", responsibleMailbox: "hostmaster.example", serial: 1, refresh: 1, retry: 1,
            expire: 1, minimum: 60)
        reply.authority = [DNSResourceRecord(name: "example", ttl: 900, data: .soa(soa))]
        #expect(DNSCache.negativeTTL(of: reply) == 60)
        reply.authority = [DNSResourceRecord(name: "example", ttl: 30, data: .soa(soa))]
        #expect(DNSCache.negativeTTL(of: reply) == 30)
    }
}

/// The cache in front of a real exchange.
@Suite struct CachingStubResolverTests {
    private func withCachingServer(
        _ behaviour: TestDNSServer.Behaviour = .init(),
        _ body: (TestDNSServer, StubResolver) async throws -> Void
    ) async throws {
        let server = try await TestDNSServer.start(records: testRecords, behaviour: behaviour)
        do {
            let resolver = try StubResolver(
                servers: [server.serverString], timeout: .milliseconds(300), attempts: 1, cache: DNSCache())
            try await body(server, resolver)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    @Test func answersAndNegativesAreAskedOnce() async throws {
        try await withCachingServer { server, resolver in
            let first = try await resolver.mx("example.com")
            let second = try await resolver.mx("EXAMPLE.com")
            #expect(first.value == second.value)
            #expect(second.ttl <= 1800)
            _ = try await resolver.a("www.example.com")  // through two CNAMEs
            let again = try await resolver.a("www.example.com")
            #expect(again.value == [IPv4Address(192, 0, 2, 80)])
            for _ in 0..<2 {
                #expect(
                    await lookupError { () async throws(DNSError) in try await resolver.mx("nowhere.example.com") }
                        == .nameNotFound)
                #expect(
                    await lookupError { () async throws(DNSError) in try await resolver.aaaa("example.com") } == .noData
                )
            }
            #expect(await server.received().count == 4)
        }
    }

    @Test func temporaryFailuresAreAskedAgain() async throws {
        try await withCachingServer(.init(mode: .serverFailure)) { server, resolver in
            for _ in 0..<3 {
                #expect(
                    await lookupError { () async throws(DNSError) in try await resolver.mx("example.com") }?.isTemporary
                        == true)
            }
            #expect(await server.received().count == 3)
            await server.setBehaviour(.init())
            let recovered = try await resolver.mx("example.com")
            #expect(recovered.value.count == 2)
        }
    }

    @Test func identicalLookupsAtTheSameTimeAreAskedOnce() async throws {
        // A silent server keeps the first lookup under way for its whole timeout: every other
        // lookup of the same name starts meanwhile, and shares its outcome.
        try await withCachingServer(.init(mode: .silent)) { server, resolver in
            let failures = await withTaskGroup(of: DNSError?.self) { group in
                for _ in 0..<5 {
                    group.addTask {
                        await lookupError { () async throws(DNSError) in try await resolver.mx("example.com") }
                    }
                }
                var failures: [DNSError?] = []
                for await failure in group { failures.append(failure) }
                return failures
            }
            #expect(failures.count == 5 && failures.allSatisfy { $0?.isTemporary == true })
            #expect(await server.received().count == 1)
            // A different name or type is its own lookup.
            await server.setBehaviour(.init())
            async let mx = resolver.mx("example.com")
            async let a = resolver.a("www.example.com")
            _ = try await (mx, a)
            #expect(await server.received().count >= 3)
        }
    }
}
