import DNSClient
import Foundation
import Logging
import Synchronization
import Testing

@testable import MailDelivery

/// TXT answers from a mutable table; a missing name is NXDOMAIN, "fail" is SERVFAIL.
private final class TXTResolver: Resolver, Sendable {
    let answers = Mutex<[String: [String]]>([:])

    func query(_ name: DNSName, type: DNSRecordType) async throws(DNSError) -> DNSAnswer<[DNSRecordData]> {
        let key = name.description.lowercased()
        guard type == .txt, let texts = answers.withLock({ $0[key] }) else { throw .nameNotFound }
        if texts == ["fail"] { throw .temporary("SERVFAIL") }
        return DNSAnswer(
            value: texts.map { .txt([Array($0.utf8)]) }, authenticated: false, ttl: 60, canonicalName: key)
    }
}

/// A policy server: the text per domain, or failure; counts fetches.
private final class PolicySource: Sendable {
    let texts = Mutex<[String: String]>([:])
    let fetches = Mutex<Int>(0)

    func fetch(_ domain: String) throws(TLSPolicyError) -> String {
        fetches.withLock { $0 += 1 }
        guard let text = texts.withLock({ $0[domain] }) else { throw TLSPolicyError("HTTP status 404") }
        return text
    }
}

private final class Clock: Sendable {
    let now = Mutex(Date(timeIntervalSince1970: 1_800_000_000))
    func advance(_ seconds: TimeInterval) { now.withLock { $0 += seconds } }
}

private func store(
    _ resolver: TXTResolver, _ source: PolicySource, _ clock: Clock, directory: String? = nil
) -> MTASTSPolicyStore {
    MTASTSPolicyStore(
        resolver: resolver, fetch: { domain throws(TLSPolicyError) in try source.fetch(domain) }, directory: directory,
        logger: Logger(label: "test"), now: { clock.now.withLock { $0 } })
}

private let enforceText = "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 3600\n"
private let testingText = "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 3600\n"

@Suite struct MTASTSPolicyStoreTests {
    @Test func fetchesOncePerIdAndRefetchesWhenTheIdChanges() async {
        let resolver = TXTResolver()
        let source = PolicySource()
        let clock = Clock()
        resolver.answers.withLock { $0["_mta-sts.example.com"] = ["v=STSv1; id=one"] }
        source.texts.withLock { $0["example.com"] = enforceText }
        let policies = store(resolver, source, clock)
        #expect(await policies.policy(for: "example.com")?.mode == .enforce)
        #expect(await policies.policy(for: "example.com")?.mode == .enforce)
        #expect(source.fetches.withLock { $0 } == 1)
        resolver.answers.withLock { $0["_mta-sts.example.com"] = ["v=STSv1; id=two"] }
        source.texts.withLock { $0["example.com"] = testingText }
        #expect(await policies.policy(for: "example.com")?.mode == .testing)
        #expect(source.fetches.withLock { $0 } == 2)
    }

    @Test func keepsAnUnexpiredPolicyWhenTheTXTOrTheFetchFails() async {
        let resolver = TXTResolver()
        let source = PolicySource()
        let clock = Clock()
        resolver.answers.withLock { $0["_mta-sts.example.com"] = ["v=STSv1; id=one"] }
        source.texts.withLock { $0["example.com"] = enforceText }
        let policies = store(resolver, source, clock)
        #expect(await policies.policy(for: "example.com")?.mode == .enforce)
        // A new id, but the server is down: the cached policy stays.
        resolver.answers.withLock { $0["_mta-sts.example.com"] = ["v=STSv1; id=two"] }
        source.texts.withLock { $0["example.com"] = nil }
        #expect(await policies.policy(for: "example.com")?.mode == .enforce)
        // The TXT record gone, or SERVFAIL: still the cached policy, until it expires.
        resolver.answers.withLock { $0["_mta-sts.example.com"] = nil }
        #expect(await policies.policy(for: "example.com")?.mode == .enforce)
        resolver.answers.withLock { $0["_mta-sts.example.com"] = ["fail"] }
        #expect(await policies.policy(for: "example.com")?.mode == .enforce)
        clock.advance(3601)
        #expect(await policies.policy(for: "example.com") == nil)
    }

    @Test func noTXTRecordOrABadPolicyIsNoPolicy() async {
        let resolver = TXTResolver()
        let source = PolicySource()
        let clock = Clock()
        let policies = store(resolver, source, clock)
        #expect(await policies.policy(for: "example.com") == nil)
        #expect(source.fetches.withLock { $0 } == 0)
        resolver.answers.withLock { $0["_mta-sts.example.com"] = ["v=STSv1; id=one"] }
        source.texts.withLock { $0["example.com"] = "version: STSv1\nmode: enforce\nmax_age: 3600\n" }
        #expect(await policies.policy(for: "example.com") == nil)
        resolver.answers.withLock { $0["_mta-sts.example.com"] = ["v=STSv1; id=one", "v=STSv1; id=two"] }
        #expect(await policies.policy(for: "example.com") == nil)
        // A name that cannot be a cache file is never looked up.
        #expect(await policies.policy(for: "../etc") == nil)
    }

    /// What TLS-RPT reports about a policy announced but not had (RFC 8460 §4.3.2.2).
    @Test func aPolicyThatCannotBeHadIsRememberedForTLSReports() async {
        let resolver = TXTResolver()
        let source = PolicySource()
        let policies = store(resolver, source, Clock())
        resolver.answers.withLock { $0["_mta-sts.example.com"] = ["v=STSv1; id=one"] }
        #expect(await policies.policy(for: "example.com") == nil)
        #expect(await policies.lookupFailure(for: "example.com")?.type == .stsPolicyFetchError)
        source.texts.withLock { $0["example.com"] = "version: STSv1\nmode: enforce\nmax_age: 3600\n" }
        #expect(await policies.policy(for: "example.com") == nil)
        #expect(await policies.lookupFailure(for: "example.com")?.type == .stsPolicyInvalid)
        source.texts.withLock { $0["example.com"] = enforceText }
        #expect(await policies.policy(for: "example.com") != nil)
        #expect(await policies.lookupFailure(for: "example.com") == nil)
    }

    @Test func aRestartedStoreReadsTheCacheFromDisk() async throws {
        let directory = NSTemporaryDirectory() + "mta-sts-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let resolver = TXTResolver()
        let source = PolicySource()
        let clock = Clock()
        resolver.answers.withLock { $0["_mta-sts.example.com"] = ["v=STSv1; id=one"] }
        source.texts.withLock { $0["example.com"] = enforceText }
        #expect(await store(resolver, source, clock, directory: directory).policy(for: "example.com") != nil)
        #expect(FileManager.default.fileExists(atPath: "\(directory)/example.com.json"))
        // After a restart, with the policy server unreachable and the same id: no fetch needed.
        source.texts.withLock { $0["example.com"] = nil }
        let restarted = store(resolver, source, clock, directory: directory)
        #expect(await restarted.policy(for: "example.com")?.mx == ["mx.example.com"])
        #expect(source.fetches.withLock { $0 } == 1)
    }
}
