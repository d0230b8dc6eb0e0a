import DNSClient
import Testing

@testable import MailPolicy

/// A DNS list server in a table: A and TXT records by name, errors by name, and names whose
/// A (or TXT) query never comes back. Anything else is NXDOMAIN.
private struct ListResolver: Resolver {
    var a: [String: [String]] = [:]
    var txt: [String: [String]] = [:]
    var errors: [String: DNSError] = [:]
    /// Names whose queries hang for 10 s, ignoring cancellation like a stuck socket would.
    var hanging: Set<String> = []
    var hangingTXT: Set<String> = []

    func query(_ name: DNSName, type: DNSRecordType) async throws(DNSError) -> DNSAnswer<[DNSRecordData]> {
        let key = name.description.lowercased()
        if (type == .a && hanging.contains(key)) || (type == .txt && hangingTXT.contains(key)) {
            await withCheckedContinuation { continuation in
                Task.detached {
                    try? await Task.sleep(for: .seconds(10))
                    continuation.resume()
                }
            }
            throw .temporary("gave up")
        }
        if let error = errors[key] { throw error }
        let records: [DNSRecordData]
        switch type {
        case .a: records = (a[key] ?? []).map { .a(IPv4Address($0)!) }
        case .txt: records = (txt[key] ?? []).map { .txt([Array($0.utf8)]) }
        default: records = []
        }
        guard !records.isEmpty else { throw a[key] == nil && txt[key] == nil ? .nameNotFound : .noData }
        return DNSAnswer(value: records, authenticated: false, ttl: 60, canonicalName: key)
    }
}

private func list(_ zone: String, _ weight: Int, _ answers: [String]? = nil) throws -> DNSList {
    try DNSList(zone: zone, weight: weight, acceptedAnswers: answers.map { try $0.map { try DNSList.AnswerRange($0) } })
}

@Suite struct DNSListTests {
    @Test(arguments: [
        // RFC 5782 §2.1: octets reversed.
        ("192.0.2.99", "99.2.0.192.bl.test"),
        ("127.0.0.2", "2.0.0.127.bl.test"),
        // A dual-stack socket's view of an IPv4 client is looked up as IPv4.
        ("::ffff:192.0.2.99", "99.2.0.192.bl.test"),
        // RFC 5782 §2.4's example: 32 nibbles, reversed.
        (
            "2001:db8:1:2:3:4:567:89ab",
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test"
        ),
        ("::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.bl.test"),
    ])
    func queryNames(client: String, name: String) throws {
        #expect(try list("BL.test.", 1).queryName(for: IPAddress(client)!) == name)
    }

    @Test func refusesBadZones() {
        #expect(throws: DNSListError.invalidZone("")) { try DNSList(zone: "", weight: 1) }
        #expect(throws: DNSListError.invalidZone("a..b")) { try DNSList(zone: "a..b", weight: 1) }
        let long = String(repeating: "abcdefghi.", count: 20) + "test"
        #expect(throws: DNSListError.invalidZone(long)) { try DNSList(zone: long, weight: 1) }
    }

    @Test(arguments: [
        ("127.0.0.2", "127.0.0.2", ["127.0.0.2"], ["127.0.0.1", "127.0.0.3"]),
        ("127.0.0.2-127.0.0.11", "127.0.0.2-127.0.0.11", ["127.0.0.2", "127.0.0.11"], ["127.0.0.12", "127.0.0.1"]),
        ("127.0.1.0/24", "127.0.1.0-127.0.1.255", ["127.0.1.0", "127.0.1.255"], ["127.0.2.0", "127.0.0.255"]),
    ])
    func answerRanges(text: String, description: String, inside: [String], outside: [String]) throws {
        let range = try DNSList.AnswerRange(text)
        #expect(range.description == description)
        for address in inside { #expect(range.contains(IPAddress(address)!)) }
        for address in outside { #expect(!range.contains(IPAddress(address)!)) }
    }

    @Test(arguments: ["", "127.0.0", "127.0.0.11-127.0.0.2", "::1", "127.0.0.1/33", "127.0.0.1-", "x"])
    func badAnswerRanges(text: String) {
        #expect(throws: DNSListError.invalidAnswerRange(text)) { try DNSList.AnswerRange(text) }
    }

    @Test func listedWithReasonAndNotListed() async throws {
        let resolver = ListResolver(
            a: ["2.0.0.127.bl.test": ["127.0.0.2"]],
            txt: ["2.0.0.127.bl.test": ["Listed; see https://bl.test/q?127.0.0.2"]])
        let check = DNSListCheck(lists: [try list("bl.test", 10)], resolver: resolver)

        let listed = await check.check(client: "127.0.0.2")
        #expect(listed.score == 10)
        #expect(
            listed.hits == [
                .init(
                    zone: "bl.test", weight: 10, answers: [IPAddress("127.0.0.2")!],
                    reason: "Listed; see https://bl.test/q?127.0.0.2")
            ])
        #expect(listed.failures.isEmpty)

        // RFC 5782 §5: 127.0.0.1 is never listed.
        let clean = await check.check(client: "127.0.0.1")
        #expect(clean == DNSListOutcome(score: 0, hits: [], failures: []))
        // Not an address: nothing to ask.
        #expect(await check.check(client: "unix-socket") == DNSListOutcome(score: 0, hits: [], failures: []))
    }

    @Test func weightsOfBlockAndAllowListsAreSummed() async throws {
        let resolver = ListResolver(a: [
            "9.2.0.192.one.test": ["127.0.0.2"], "9.2.0.192.two.test": ["127.0.0.4", "127.0.0.2"],
            "9.2.0.192.allow.test": ["127.0.10.1"],
        ])
        let lists = [
            try list("one.test", 10), try list("two.test", 5), try list("allow.test", -7), try list("three.test", 20),
        ]
        let outcome = await DNSListCheck(lists: lists, resolver: resolver).check(client: "192.0.2.9")
        #expect(outcome.score == 8)
        #expect(outcome.hits.map(\.zone) == ["one.test", "two.test", "allow.test"])
        #expect(outcome.hits.map(\.weight) == [10, 5, -7])
        #expect(outcome.hits[1].answers == [IPAddress("127.0.0.4")!, IPAddress("127.0.0.2")!])
        #expect(outcome.failures.isEmpty)
    }

    @Test func errorCodesAndStrangeAnswersAreReportedNotCounted() async throws {
        let resolver = ListResolver(
            a: [
                "9.2.0.192.refusing.test": ["127.255.255.254"],
                "9.2.0.192.limited.test": ["127.255.255.255"],
                "9.2.0.192.hijacked.test": ["198.51.100.7"],
                "9.2.0.192.broken.test": [],
            ], errors: ["9.2.0.192.broken.test": .temporary("SERVFAIL")])
        // A custom range that includes the error codes still does not count them.
        let lists = [
            try list("refusing.test", 10), try list("limited.test", 10, ["127.0.0.0/8"]),
            try list("hijacked.test", 10), try list("broken.test", 10),
        ]
        let outcome = await DNSListCheck(lists: lists, resolver: resolver).check(client: "192.0.2.9")
        #expect(outcome.score == 0)
        #expect(outcome.hits.isEmpty)
        #expect(
            outcome.failures == [
                .init(zone: "refusing.test", reason: .refused(answers: [IPAddress("127.255.255.254")!])),
                .init(zone: "limited.test", reason: .refused(answers: [IPAddress("127.255.255.255")!])),
                .init(zone: "hijacked.test", reason: .unexpectedAnswer([IPAddress("198.51.100.7")!])),
                .init(zone: "broken.test", reason: .dns(.temporary("SERVFAIL"))),
            ])
    }

    @Test func acceptedAnswersFilterListings() async throws {
        let resolver = ListResolver(a: ["2.0.0.127.zen.test": ["127.0.0.10"], "3.0.0.127.zen.test": ["127.0.0.4"]])
        let check = DNSListCheck(lists: [try list("zen.test", 10, ["127.0.0.2-127.0.0.9"])], resolver: resolver)
        // 127.0.0.10 is outside the accepted range: not listed, and not a failure either.
        #expect(await check.check(client: "127.0.0.2") == DNSListOutcome(score: 0, hits: [], failures: []))
        #expect(await check.check(client: "127.0.0.3").score == 10)
    }

    @Test func ipv6ClientsUseNibbleNames() async throws {
        let name = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.v6.test"
        let check = DNSListCheck(lists: [try list("v6.test", 3)], resolver: ListResolver(a: [name: ["127.0.0.2"]]))
        #expect(await check.check(client: "2001:db8::1").score == 3)
        #expect(await check.check(client: "2001:db8::2").score == 0)
    }

    @Test func aListThatNeverAnswersCostsOnlyTheTimeLimit() async throws {
        let resolver = ListResolver(a: ["9.2.0.192.fast.test": ["127.0.0.2"]], hanging: ["9.2.0.192.dead.test"])
        let check = DNSListCheck(
            lists: [try list("dead.test", 100), try list("fast.test", 4)], resolver: resolver,
            timeLimit: .seconds(2))
        let start = ContinuousClock.now
        let outcome = await check.check(client: "192.0.2.9")
        // The dead list would take 10 s.
        #expect(ContinuousClock.now - start < .seconds(8))
        #expect(outcome.score == 4)
        #expect(outcome.failures == [.init(zone: "dead.test", reason: .timedOut)])
    }

    @Test func aReasonThatNeverComesDoesNotLoseTheListing() async throws {
        let resolver = ListResolver(a: ["9.2.0.192.bl.test": ["127.0.0.2"]], hangingTXT: ["9.2.0.192.bl.test"])
        let check = DNSListCheck(
            lists: [try list("bl.test", 10)], resolver: resolver, timeLimit: .seconds(20),
            reasonTimeLimit: .milliseconds(200))
        let start = ContinuousClock.now
        let outcome = await check.check(client: "192.0.2.9")
        // The TXT query would take 10 s.
        #expect(ContinuousClock.now - start < .seconds(8))
        #expect(outcome.hits.map(\.reason) == [nil])
        #expect(outcome.score == 10)
    }

    @Test func reasonsAreOneShortLineOfPrintableASCII() async throws {
        let resolver = ListResolver(
            a: ["9.2.0.192.bl.test": ["127.0.0.2"]],
            txt: ["9.2.0.192.bl.test": ["spam\r\n250 ok", String(repeating: "x", count: 5000)]])
        let outcome = await DNSListCheck(lists: [try list("bl.test", 1)], resolver: resolver).check(client: "192.0.2.9")
        let reason = try #require(outcome.hits.first?.reason)
        #expect(reason.hasPrefix("spam??250 ok; xxx"))
        #expect(reason.count == DNSListCheck.maximumReasonLength)
    }

    @Test func cancellingTheCallerEndsTheCheck() async throws {
        let resolver = ListResolver(hanging: ["9.2.0.192.dead.test"])
        let check = DNSListCheck(lists: [try list("dead.test", 1)], resolver: resolver, timeLimit: .seconds(30))
        let task = Task { await check.check(client: "192.0.2.9") }
        try await Task.sleep(for: .milliseconds(100))
        task.cancel()
        let outcome = await task.value
        #expect(outcome.failures == [.init(zone: "dead.test", reason: .cancelled)])
    }
}
