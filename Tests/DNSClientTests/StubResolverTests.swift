import NIOCore
import Testing

@testable import DNSClient

/// The zone every live test's server answers from.
let testRecords: [DNSResourceRecord] = [
    DNSResourceRecord(name: "example.com", ttl: 3600, data: .mx(preference: 10, exchange: "mx1.example.com")),
    DNSResourceRecord(name: "example.com", ttl: 1800, data: .mx(preference: 20, exchange: "mx2.example.com")),
    DNSResourceRecord(name: "example.com", ttl: 300, data: .txt([Array("v=spf1 ".utf8), Array("-all".utf8)])),
    DNSResourceRecord(name: "example.com", ttl: 300, data: .txt([Array("hello".utf8)])),
    DNSResourceRecord(name: "mx1.example.com", ttl: 600, data: .a(IPv4Address(192, 0, 2, 1))),
    DNSResourceRecord(name: "mx1.example.com", ttl: 600, data: .aaaa(IPv6Address("2001:db8::1")!)),
    DNSResourceRecord(name: "1.2.0.192.in-addr.arpa", ttl: 900, data: .ptr("mx1.example.com")),
    DNSResourceRecord(name: IPv6Address("2001:db8::1")!.reverseName, ttl: 900, data: .ptr("mx1.example.com")),
    DNSResourceRecord(
        name: "_25._tcp.mx1.example.com", ttl: 120,
        data: .tlsa(TLSARecord(usage: 3, selector: 1, matchingType: 1, data: Array(0..<32)))),
    DNSResourceRecord(name: "www.example.com", ttl: 500, data: .cname("web.example.com")),
    DNSResourceRecord(name: "web.example.com", ttl: 400, data: .cname("host.example.com")),
    DNSResourceRecord(name: "host.example.com", ttl: 450, data: .a(IPv4Address(192, 0, 2, 80))),
    DNSResourceRecord(name: "loop1.example.com", ttl: 60, data: .cname("loop2.example.com")),
    DNSResourceRecord(name: "loop2.example.com", ttl: 60, data: .cname("loop1.example.com")),
    DNSResourceRecord(name: "null.example.net", ttl: 60, data: .mx(preference: 0, exchange: .root)),
]

/// Starts a server with `testRecords`, runs `body` with a resolver pointed at it, stops it.
func withServer<T>(
    _ behaviour: TestDNSServer.Behaviour = .init(), timeout: Duration = .milliseconds(500),
    attempts: Int = 2,
    _ body: (TestDNSServer, StubResolver) async throws -> T
) async throws -> T {
    let server = try await TestDNSServer.start(records: testRecords, behaviour: behaviour)
    do {
        let resolver = try StubResolver(servers: [server.serverString], timeout: timeout, attempts: attempts)
        let result = try await body(server, resolver)
        await server.stop()
        return result
    } catch {
        await server.stop()
        throw error
    }
}

/// The error a lookup threw, or nil when it succeeded.
func lookupError<T>(_ lookup: () async throws(DNSError) -> T) async -> DNSError? {
    do {
        _ = try await lookup()
        return nil
    } catch {
        return error
    }
}

@Suite struct StubResolverLiveTests {
    @Test func mx() async throws {
        try await withServer { _, resolver in
            let answer = try await resolver.mx("example.com")
            #expect(
                answer.value == [
                    MXRecord(preference: 10, exchange: "mx1.example.com"),
                    MXRecord(preference: 20, exchange: "mx2.example.com"),
                ])
            #expect(answer.ttl == 1800)
            #expect(answer.canonicalName == "example.com")
            #expect(!answer.authenticated)
            #expect(answer.value.allSatisfy { !$0.isNullMX })
            #expect(try await resolver.mx("null.example.net").value.map(\.isNullMX) == [true])
        }
    }

    @Test func addressesTextPointerAndTLSA() async throws {
        try await withServer { _, resolver in
            #expect(try await resolver.a("mx1.example.com").value.map(\.description) == ["192.0.2.1"])
            #expect(try await resolver.aaaa("MX1.example.com.").value.map(\.description) == ["2001:db8::1"])
            #expect(try await resolver.txt("example.com").value == ["v=spf1 -all", "hello"])
            #expect(try await resolver.ptr("192.0.2.1").value == ["mx1.example.com"])
            #expect(try await resolver.ptr("2001:db8::1").value == ["mx1.example.com"])
            let tlsa = try await resolver.tlsa("_25._tcp.mx1.example.com")
            #expect(tlsa.value == [TLSARecord(usage: 3, selector: 1, matchingType: 1, data: Array(0..<32))])
            #expect(tlsa.ttl == 120)
        }
    }

    @Test func cnameChainIsFollowed() async throws {
        try await withServer { _, resolver in
            let answer = try await resolver.a("www.example.com")
            #expect(answer.value == [IPv4Address(192, 0, 2, 80)])
            #expect(answer.canonicalName == "host.example.com")
            #expect(answer.ttl == 400)
            // The CNAME itself, asked for directly, is not followed.
            let alias = try await resolver.query("www.example.com", type: .cname)
            #expect(alias.value == [.cname("web.example.com")])
        }
    }

    @Test func cnameLoopIsMalformed() async throws {
        try await withServer { _, resolver in
            let error = await lookupError { () async throws(DNSError) in try await resolver.a("loop1.example.com") }
            guard case .malformed = error else {
                Issue.record("expected malformed, got \(String(describing: error))")
                return
            }
            #expect(error?.isTemporary == true)
        }
    }

    @Test func negativeAnswersArePermanent() async throws {
        try await withServer { _, resolver in
            let missing = await lookupError { () async throws(DNSError) in try await resolver.a("nope.example.com") }
            #expect(missing == .nameNotFound)
            #expect(missing?.isTemporary == false)
            let noData = await lookupError { () async throws(DNSError) in try await resolver.mx("mx1.example.com") }
            #expect(noData == .noData)
            #expect(noData?.isTemporary == false)
            let missingPTR = await lookupError { () async throws(DNSError) in try await resolver.ptr("192.0.2.99") }
            #expect(missingPTR == .nameNotFound)
        }
    }

    static let failingModes: [(TestDNSServer.Mode, Bool)] = [
        (.serverFailure, true), (.refused, true), (.nameError, false),
    ]

    @Test(arguments: failingModes)
    func serverErrors(mode: TestDNSServer.Mode, temporary: Bool) async throws {
        try await withServer(.init(mode: mode)) { server, resolver in
            let error = await lookupError { () async throws(DNSError) in try await resolver.a("mx1.example.com") }
            #expect(error?.isTemporary == temporary)
            if !temporary { #expect(error == .nameNotFound) }
            // A temporary failure is asked again on the next round; NXDOMAIN is final.
            #expect(await server.received().count == (temporary ? 2 : 1))
        }
    }

    @Test func invalidQuestions() async throws {
        try await withServer { server, resolver in
            let badAddress = await lookupError { () async throws(DNSError) in try await resolver.ptr("192.0.2") }
            #expect(badAddress == .invalidInput("not an IP address: 192.0.2"))
            let badName = await lookupError { () async throws(DNSError) in try await resolver.a("a..b") }
            #expect(badName?.isTemporary == false)
            #expect(await server.received().isEmpty)
        }
    }

    @Test func silentServerFailsWithinTimeoutTimesAttempts() async throws {
        try await withServer(.init(mode: .silent), timeout: .milliseconds(200), attempts: 2) { server, resolver in
            let clock = ContinuousClock()
            let start = clock.now
            let error = await lookupError { () async throws(DNSError) in try await resolver.a("mx1.example.com") }
            let elapsed = clock.now - start
            #expect(error?.isTemporary == true)
            // Two attempts of 200 ms each (the count below), and no hang. The upper bound is
            // loose on purpose: with 2 cores and 500 tests in parallel, 4.7 s was seen in CI.
            #expect(elapsed >= .milliseconds(380))
            #expect(elapsed < .seconds(15))
            #expect(await server.received().count == 2)
        }
    }

    @Test func fallsOverToTheSecondServer() async throws {
        let silent = try await TestDNSServer.start(behaviour: .init(mode: .silent))
        let failing = try await TestDNSServer.start(behaviour: .init(mode: .serverFailure))
        let good = try await TestDNSServer.start(records: testRecords)
        defer {
            Task {
                await silent.stop(); await failing.stop(); await good.stop()
            }
        }
        let resolver = try StubResolver(
            servers: [silent.serverString, failing.serverString, good.serverString],
            timeout: .milliseconds(200), attempts: 2)
        let answer = try await resolver.a("mx1.example.com")
        #expect(answer.value == [IPv4Address(192, 0, 2, 1)])
        #expect(await silent.received().count == 1)
        #expect(await failing.received().count == 1)
        #expect(await good.received().count == 1)
    }

    @Test func truncatedReplyFallsBackToTCP() async throws {
        try await withServer(.init(truncateUDP: true)) { server, resolver in
            let answer = try await resolver.mx("example.com")
            #expect(answer.value.count == 2)
            #expect(await server.received().map(\.transport) == [.udp, .tcp])
        }
    }

    @Test(arguments: [
        TestDNSServer.Behaviour(wrongIDFirst: true), TestDNSServer.Behaviour(spoofFirst: true),
        TestDNSServer.Behaviour(garbageFirst: true),
    ])
    func decoyRepliesAreIgnored(behaviour: TestDNSServer.Behaviour) async throws {
        try await withServer(behaviour) { server, resolver in
            // Each decoy says NXDOMAIN; accepting it would throw.
            let answer = try await resolver.a("mx1.example.com")
            #expect(answer.value == [IPv4Address(192, 0, 2, 1)])
            #expect(await server.received().count == 1)
        }
    }

    @Test func authenticatedDataBitIsSurfaced() async throws {
        try await withServer(.init(authenticated: true)) { _, resolver in
            let answer = try await resolver.tlsa("_25._tcp.mx1.example.com")
            #expect(answer.authenticated)
        }
    }

    @Test func cancellationEndsTheLookup() async throws {
        // A silent server and a long timeout: only cancellation can end the lookup early. The
        // bound is loose, for a loaded CI machine (3 s was seen with 2 cores and tests in parallel).
        try await withServer(.init(mode: .silent), timeout: .seconds(30)) { _, resolver in
            let clock = ContinuousClock()
            let start = clock.now
            let lookup = Task {
                await lookupError { () async throws(DNSError) in try await resolver.a("mx1.example.com") }
            }
            try await Task.sleep(for: .milliseconds(50))
            lookup.cancel()
            #expect(await lookup.value?.isTemporary == true)
            #expect(clock.now - start < .seconds(10))
        }
    }

    @Test func ipv6Server() async throws {
        // Skipped where the machine has no ::1.
        guard let server = try? await TestDNSServer.start(host: "::1", records: testRecords) else { return }
        let resolver = try StubResolver(servers: [server.serverString], timeout: .milliseconds(500))
        let answer = try await resolver.aaaa("mx1.example.com")
        await server.stop()
        #expect(answer.value == [IPv6Address("2001:db8::1")!])
    }

    @Test func closedPortFailsFast() async throws {
        // A port that was just in use and is now closed: ICMP port unreachable arrives at once.
        let server = try await TestDNSServer.start()
        let address = server.serverString
        await server.stop()
        // A 30 s timeout: only the ICMP error can end the lookup within the (loaded-CI) bound.
        let resolver = try StubResolver(servers: [address], timeout: .seconds(30), attempts: 1)
        let clock = ContinuousClock()
        let start = clock.now
        let error = await lookupError { () async throws(DNSError) in try await resolver.a("mx1.example.com") }
        #expect(error?.isTemporary == true)
        #expect(clock.now - start < .seconds(10))
    }
}

@Suite struct StubResolverUnitTests {
    static func reply(_ rcode: UInt8, _ answers: [DNSResourceRecord]) -> DNSMessage {
        DNSMessage(header: DNSHeader(id: 1, isResponse: true, rcode: rcode), answers: answers)
    }

    @Test func answerClassification() {
        let a = DNSResourceRecord(name: "a.test", ttl: 5, data: .a(IPv4Address(192, 0, 2, 1)))
        #expect(throws: DNSError.noData) { try StubResolver.answer(from: Self.reply(0, []), name: "a.test", type: .a) }
        #expect(throws: DNSError.noData) { try StubResolver.answer(from: Self.reply(0, [a]), name: "b.test", type: .a) }
        #expect(throws: DNSError.nameNotFound) {
            try StubResolver.answer(from: Self.reply(3, []), name: "a.test", type: .a)
        }
        #expect(throws: DNSError.temporary("server answered SERVFAIL")) {
            try StubResolver.answer(from: Self.reply(2, []), name: "a.test", type: .a)
        }
        #expect(throws: Never.self) { try StubResolver.answer(from: Self.reply(0, [a]), name: "A.TEST", type: .a) }
    }

    @Test func cnameChainLimit() throws {
        func chain(_ length: Int) -> DNSMessage {
            var records = (0..<length).map {
                DNSResourceRecord(
                    name: try! DNSName("c\($0).test"), ttl: 100, data: .cname(try! DNSName("c\($0 + 1).test")))
            }
            records.append(
                DNSResourceRecord(name: try! DNSName("c\(length).test"), ttl: 50, data: .a(IPv4Address(192, 0, 2, 1))))
            return Self.reply(0, records)
        }
        let eight = try StubResolver.answer(from: chain(8), name: "c0.test", type: .a)
        #expect(eight.canonicalName == "c8.test")
        #expect(eight.ttl == 50)
        #expect(throws: DNSError.self) { try StubResolver.answer(from: chain(9), name: "c0.test", type: .a) }
    }

    @Test func replyMatching() {
        let query = DNSMessage.query(id: 42, name: "example.com", type: .a)
        var reply = query
        reply.header.isResponse = true
        #expect(DNSTransport.isReply(reply, to: query))
        reply.questions[0].name = "EXAMPLE.com"
        #expect(DNSTransport.isReply(reply, to: query))
        var other = reply
        other.header.id = 43
        #expect(!DNSTransport.isReply(other, to: query))
        other = reply
        other.questions[0].type = .aaaa
        #expect(!DNSTransport.isReply(other, to: query))
        other = reply
        other.header.isResponse = false
        #expect(!DNSTransport.isReply(other, to: query))
        other = reply
        other.questions = []
        #expect(!DNSTransport.isReply(other, to: query))
        other.header.rcode = 1
        #expect(DNSTransport.isReply(other, to: query))
    }

    static let serverTexts: [(String, String?)] = [
        ("192.0.2.53", "192.0.2.53 53"),
        ("192.0.2.53:5353", "192.0.2.53 5353"),
        ("2001:db8::53", "2001:db8::53 53"),
        ("[2001:db8::53]:5353", "2001:db8::53 5353"),
        ("[::1]", "::1 53"),
        ("dns.example", nil),
        ("192.0.2.53:0", nil),
        ("192.0.2.53:x", nil),
        ("[::1", nil),
        ("[::1]53", nil),
    ]

    @Test(arguments: serverTexts)
    func serverAddresses(text: String, expected: String?) {
        let address = try? StubResolver.serverAddress(text)
        #expect(address.map { "\($0.ipAddress!) \($0.port!)" } == expected)
    }

    @Test func resolvConf() {
        let text = """
            # generated
            search example.com
            nameserver 192.0.2.53
            nameserver\t2001:db8::53  # comment
            ; nameserver 192.0.2.99
            nameserver fe80::1%eth0
            nameserver dns.example
            options timeout:1
            """
        #expect(StubResolver.nameservers(inResolvConf: text) == ["192.0.2.53:53", "[2001:db8::53]:53"])
        #expect(StubResolver.systemServers(resolvConf: "/nonexistent/resolv.conf") == ["127.0.0.1:53"])
        #expect(!StubResolver.systemServers().isEmpty)
    }
}
