import Foundation
import NIOCore
import Testing

@testable import DNSClient

/// Replays the DNS fuzz seed corpus (replies made by dnspython, and any crash input added later)
/// with the fuzz target's checks, and pins what the resolver reads out of the seeds.
@Suite struct DNSFuzzCorpusTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("FuzzCorpus")

    static let corpus: [String] = {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.sorted()
    }()

    static func message(_ name: String) throws -> DNSMessage {
        let data = try #require(FileManager.default.contents(atPath: directory.appendingPathComponent(name).path))
        return try DNSMessage.parse(ByteBuffer(bytes: data))
    }

    @Test func corpusIsPresent() {
        #expect(Self.corpus.count >= 10)
    }

    /// What the fuzz target checks: anything accepted survives encode → parse unchanged.
    @Test(arguments: corpus)
    func roundTrips(_ name: String) throws {
        let data = try #require(FileManager.default.contents(atPath: Self.directory.appendingPathComponent(name).path))
        guard let message = try? DNSMessage.parse(ByteBuffer(bytes: data)) else { return }
        #expect(try DNSMessage.parse(message.encoded()) == message)
    }

    @Test func seedsReadAsExpected() throws {
        let chain = try Self.message("cname-chain")
        let answer = try StubResolver.answer(from: chain, name: "www.example.com", type: .a)
        #expect(answer.value == [.a(IPv4Address(192, 0, 2, 80))])
        #expect(answer.ttl == 400 && answer.canonicalName == "host.example.com")

        let nxdomain = try Self.message("nxdomain-soa")
        #expect(throws: DNSError.nameNotFound) {
            try StubResolver.answer(from: nxdomain, name: "nowhere.example.com", type: .mx)
        }
        #expect(DNSCache.negativeTTL(of: nxdomain) == 300)
        #expect(throws: DNSError.noData) {
            try StubResolver.answer(from: try Self.message("nodata-soa"), name: "example.com", type: .aaaa)
        }

        let tlsa = try Self.message("tlsa")
        #expect(tlsa.header.authenticData)
        #expect(tlsa.opt != nil)
        let mx = try StubResolver.answer(from: try Self.message("mx-compressed"), name: "example.com", type: .mx)
        // Records in the order the server sent them; routing sorts by preference.
        let expected: Set<DNSRecordData> = [
            .mx(preference: 10, exchange: "mx1.example.com"), .mx(preference: 20, exchange: "mx2.example.com"),
        ]
        #expect(Set(mx.value) == expected)
        #expect(try Self.message("servfail-no-edns").opt == nil)
    }
}
