import DNSClient
import Foundation
import NIOCore
import Testing

@testable import MailPolicy

/// The dkimpy-signed fixtures of Fixtures/dkim (see make-fixtures.py there).
enum DKIMFixtures {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/dkim")
    /// The t= of every fixture signature: 2026-01-01T00:00:00Z.
    static let signedAt = Date(timeIntervalSince1970: 1_767_225_600)

    static func message(_ name: String) throws -> [UInt8] {
        Array(try Data(contentsOf: directory.appendingPathComponent(name)))
    }

    static func text(_ name: String) throws -> String {
        try String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8)
    }

    /// records.txt: `<name> TAB <record>` lines.
    static func records() throws -> [String: [String]] {
        var table: [String: [String]] = [:]
        for line in try text("records.txt").split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: "\t", maxSplits: 1)
            table[String(parts[0]), default: []].append(String(parts[1]))
        }
        return table
    }
}

/// TXT records from a table; other names are NXDOMAIN. Counts the questions asked.
final class KeyTable: Resolver, @unchecked Sendable {
    private let records: [String: [String]]
    private let errors: [String: DNSError]
    private let lock = NSLock()
    private var asked: [String] = []

    init(_ records: [String: [String]], errors: [String: DNSError] = [:]) {
        self.records = records
        self.errors = errors
    }

    var questions: [String] { lock.withLock { asked } }

    func query(_ name: DNSName, type: DNSRecordType) async throws(DNSError) -> DNSAnswer<[DNSRecordData]> {
        let key = name.description.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "."))
        lock.withLock { asked.append(key) }
        if let error = errors[key] { throw error }
        guard type == .txt, let texts = records[key] else { throw .nameNotFound }
        // Long records arrive as several character-strings (RFC 6376 §3.6.2.2).
        let value = texts.map { text in
            DNSRecordData.txt(
                stride(from: 0, to: text.utf8.count, by: 255).map {
                    Array(Array(text.utf8)[$0..<min($0 + 255, text.utf8.count)])
                })
        }
        return DNSAnswer(value: value, authenticated: false, ttl: 300, canonicalName: key)
    }
}

/// Feeds `message` to a verifier in the chunks given by `splits` (offsets) and verifies it.
func verifyDKIM(
    _ message: [UInt8], resolver: any Resolver, now: Date = DKIMFixtures.signedAt.addingTimeInterval(60),
    splits: [Int] = [], maxSignatures: Int = 5, headerLimit: Int = 102_400
) async -> [DKIMResult] {
    let verifier = DKIMVerifier(maxSignatures: maxSignatures, headerLimit: headerLimit)
    var start = 0
    for split in splits + [message.count] {
        verifier.append(ByteBuffer(bytes: message[start..<split]))
        start = split
    }
    return await verifier.verify(resolver: resolver, now: now)
}

/// The message with the first occurrence of `old` replaced by `new`.
func replacing(_ old: String, with new: String, in message: [UInt8]) -> [UInt8] {
    let text = String(decoding: message, as: UTF8.self)
    guard let range = text.range(of: old) else { return message }
    return Array(text.replacingCharacters(in: range, with: new).utf8)
}

@Suite struct DKIMVerifierTests {
    let table: [String: [String]]
    let keys: KeyTable

    init() throws {
        table = try DKIMFixtures.records()
        keys = KeyTable(table)
    }

    /// `table` with the record at `name` replaced.
    func keys(_ name: String, _ record: String) -> KeyTable {
        var changed = table
        changed[name] = [record]
        return KeyTable(changed)
    }

    static let s2048 = "s2048._domainkey.example.test"

    @Test(arguments: [
        ("rsa-relaxed-relaxed.eml", "rsa-sha256", "s2048", "@example.test"),
        ("rsa-simple-simple.eml", "rsa-sha256", "s2048", "@example.test"),
        ("rsa-relaxed-simple.eml", "rsa-sha256", "s2048", "@example.test"),
        ("rsa-length.eml", "rsa-sha256", "s2048", "@example.test"),
        ("rsa-identity.eml", "rsa-sha256", "s2048", "alice@mail.example.test"),
        ("ed25519.eml", "ed25519-sha256", "ed", "@example.test"),
        ("expiring.eml", "rsa-sha256", "s2048", "@example.test"),
    ])
    func dkimpySignaturesPass(fixture: String, algorithm: String, selector: String, identity: String) async throws {
        let results = await verifyDKIM(try DKIMFixtures.message(fixture), resolver: keys)
        #expect(results.count == 1)
        let result = try #require(results.first)
        #expect(result.result == .pass, "\(result.reason ?? "")")
        #expect(result.reason == nil)
        #expect(result.domain == "example.test")
        #expect(result.selector == selector)
        #expect(result.algorithm == algorithm)
        #expect(result.identity == identity)
        #expect(result.signature.count > 8 && !result.signature.contains(" "))
        #expect(!result.testing)
    }

    @Test(arguments: ["rsa-relaxed-relaxed.eml", "rsa-simple-simple.eml", "ed25519.eml"])
    func everySplitPointVerifiesTheSame(fixture: String) async throws {
        let message = try DKIMFixtures.message(fixture)
        for split in 0...message.count {
            let results = await verifyDKIM(message, resolver: keys, splits: [split])
            #expect(results.map(\.result) == [.pass], "split at \(split)")
        }
        let octetByOctet = await verifyDKIM(message, resolver: keys, splits: Array(1..<message.count))
        #expect(octetByOctet.map(\.result) == [.pass])
    }

    @Test(arguments: [
        // (fixture, change, replacement, result, reason)
        ("rsa-relaxed-relaxed.eml", "at noon", "at one", DKIMResult.Outcome.fail, "body hash did not verify"),
        ("rsa-relaxed-relaxed.eml", "Subject: Lunch", "Subject: Dinner", .fail, "signature did not verify"),
        ("rsa-relaxed-relaxed.eml", "To: Bob", "To: Mallory", .fail, "signature did not verify"),
        ("rsa-relaxed-relaxed.eml", "Date:", "From: mallory@evil.test\r\nDate:", .fail, "signature did not verify"),
        (
            "rsa-relaxed-relaxed.eml", "s=s2048", "s=s2049", .permerror,
            "no key record at s2049._domainkey.example.test"
        ),
        ("rsa-simple-simple.eml", "at noon", "at  noon", .fail, "body hash did not verify"),
        ("rsa-simple-simple.eml", "Subject: Lunch   on", "Subject: Lunch on", .fail, "signature did not verify"),
        ("ed25519.eml", "Subject: Lunch", "Subject: Dinner", .fail, "signature did not verify"),
        ("ed25519.eml", "Hello Bob", "Hello Eve", .fail, "body hash did not verify"),
        ("rsa-length.eml", "Hello Bob", "Hello Eve", .fail, "body hash did not verify"),
    ])
    func tamperingFails(
        fixture: String, change: String, replacement: String, result: DKIMResult.Outcome, reason: String
    ) async throws {
        let message = replacing(change, with: replacement, in: try DKIMFixtures.message(fixture))
        #expect(message != (try DKIMFixtures.message(fixture)))
        let results = await verifyDKIM(message, resolver: keys)
        #expect(results.map(\.result) == [result])
        #expect(results.first?.reason == reason)
    }

    @Test(arguments: [
        ("Subject: Lunch   on\r\n  Friday?", "subject:   Lunch on Friday?"),
        ("Hello Bob,  \r\n", "Hello   Bob,\r\n"),
        ("\r\n\r\n\r\n", "\r\n"),
    ])
    func relaxedToleratesWhitespace(change: String, replacement: String) async throws {
        let message = replacing(change, with: replacement, in: try DKIMFixtures.message("rsa-relaxed-relaxed.eml"))
        #expect(await verifyDKIM(message, resolver: keys).map(\.result) == [.pass])
    }

    @Test func lengthTagLetsTextBeAppended() async throws {
        let message = try DKIMFixtures.message("rsa-length.eml") + Array("P.S. click here\r\n".utf8)
        #expect(await verifyDKIM(message, resolver: keys).map(\.result) == [.pass])
        let shortened = replacing(" -- Alice\r\n", with: "", in: try DKIMFixtures.message("rsa-length.eml"))
        let results = await verifyDKIM(shortened, resolver: keys)
        #expect(results.map(\.result) == [.fail])
        #expect(results.first?.reason?.hasPrefix("body is shorter than l=") == true)
        // Without l=, appended text breaks the body hash.
        let plain = try DKIMFixtures.message("rsa-relaxed-relaxed.eml") + Array("P.S.\r\n".utf8)
        #expect(await verifyDKIM(plain, resolver: keys).map(\.result) == [.fail])
    }

    @Test func expiredSignatureFails() async throws {
        let message = try DKIMFixtures.message("expiring.eml")
        let later = DKIMFixtures.signedAt.addingTimeInterval(7200)
        let results = await verifyDKIM(message, resolver: keys, now: later)
        #expect(results.map(\.result) == [.fail])
        #expect(results.first?.reason == "signature expired")
        #expect(keys.questions.isEmpty)  // no key lookup for an expired signature
        let justInTime = DKIMFixtures.signedAt.addingTimeInterval(3600)
        #expect(await verifyDKIM(message, resolver: keys, now: justInTime).map(\.result) == [.pass])
    }

    @Test func dnsFailures() async throws {
        let message = try DKIMFixtures.message("rsa-relaxed-relaxed.eml")
        let cases: [(DNSError, DKIMResult.Outcome)] = [
            (.temporary("SERVFAIL"), .temperror), (.malformed("bad reply"), .temperror),
            (.nameNotFound, .permerror), (.noData, .permerror),
        ]
        for (error, outcome) in cases {
            let results = await verifyDKIM(message, resolver: KeyTable(table, errors: [Self.s2048: error]))
            #expect(results.map(\.result) == [outcome], "\(error)")
        }
        #expect(await verifyDKIM(message, resolver: KeyTable([:])).map(\.result) == [.permerror])
    }

    @Test(arguments: [
        ("v=DKIM1; k=rsa; p=", DKIMResult.Outcome.permerror, "key revoked"),
        ("v=DKIM1; p=", .permerror, "key revoked"),
        (
            "v=DKIM1; k=ed25519; p=hmO3fqYumNiKYEsJtFMGwS8GI11ZmaDoqg1lQjJbF7I=", .permerror,
            "key type k=ed25519 does not match a=rsa-sha256"
        ),
        ("v=DKIM1; k=dsa; p=AAAA", .permerror, "unsupported key type k=dsa"),
        ("k=rsa; v=DKIM1; p=AAAA", .permerror, "key record version is not DKIM1"),
        ("v=DKIM2; p=AAAA", .permerror, "key record version is not DKIM1"),
        ("v=DKIM1; k=rsa", .permerror, "key record has no p= tag"),
        ("v=DKIM1; p=!!!", .permerror, "key record p= is not base64"),
        ("v=DKIM1; p=AAAA", .permerror, "malformed RSA public key"),
        ("v=DKIM1; p=AAAA; p=AAAA", .permerror, "malformed key record: tag p= appears more than once"),
    ])
    func unusableKeys(record: String, outcome: DKIMResult.Outcome, reason: String) async throws {
        let results = await verifyDKIM(
            try DKIMFixtures.message("rsa-relaxed-relaxed.eml"), resolver: keys(Self.s2048, record))
        #expect(results.map(\.result) == [outcome])
        #expect(results.first?.reason == reason)
    }

    @Test func keyRecordFlagsAndRestrictions() async throws {
        let good = table[Self.s2048]![0]
        let message = try DKIMFixtures.message("rsa-relaxed-relaxed.eml")
        let identity = try DKIMFixtures.message("rsa-identity.eml")
        func result(_ message: [UInt8], _ record: String) async -> DKIMResult? {
            await verifyDKIM(message, resolver: keys(Self.s2048, record)).first
        }
        #expect(await result(message, good + "; t=y")?.testing == true)
        #expect(await result(message, good + "; t=y")?.result == .pass)
        #expect(await result(message, good + "; h=sha1:sha256; s=email; t=q:s")?.result == .pass)
        #expect(await result(message, good + "; h=sha1")?.reason == "key does not allow sha256 (h=sha1)")
        #expect(await result(message, good + "; s=tlsrpt")?.reason == "key is not for email (s=tlsrpt)")
        // t=s: the i= domain must be d= exactly, not mail.example.test.
        #expect(await result(identity, good)?.result == .pass)
        #expect(await result(identity, good + "; t=s")?.result == .permerror)
        #expect(await result(identity, good + "; t=s")?.reason == "key forbids an i= subdomain of d= (t=s)")
        // The first record that parses is used (RFC 6376 §3.6.2.2 leaves several undefined).
        let several = KeyTable(table.merging([Self.s2048: ["v=spf1 -all", good]]) { $1 })
        #expect(await verifyDKIM(message, resolver: several).map(\.result) == [.pass])
    }

    @Test func weakRSAKeyFails() async throws {
        let results = await verifyDKIM(try DKIMFixtures.message("rsa-weak.eml"), resolver: keys)
        #expect(results.map(\.result) == [.fail])
        #expect(results.first?.reason == "RSA key of 768 bits is too weak (RFC 8301)")
    }

    @Test func eachSignatureHasItsOwnResult() async throws {
        let results = await verifyDKIM(try DKIMFixtures.message("two-signatures.eml"), resolver: keys)
        #expect(results.map(\.result) == [.pass, .fail])
        #expect(results.map(\.selector) == ["s2048", "wrong"])
        #expect(results[1].reason == "signature did not verify")
    }

    @Test func unsignedMessageHasNoResults() async {
        let message = Array("From: a@example.test\r\nSubject: hi\r\n\r\nbody\r\n".utf8)
        #expect(await verifyDKIM(message, resolver: keys).isEmpty)
        #expect(await verifyDKIM([], resolver: keys).isEmpty)
        #expect(keys.questions.isEmpty)
    }

    @Test func signaturesBeyondTheCapAreNotEvaluated() async throws {
        let message = try DKIMFixtures.message("rsa-relaxed-relaxed.eml")
        let text = String(decoding: message, as: UTF8.self)
        let field = String(text[..<text.range(of: "Received:")!.lowerBound])
        let many = Array((String(repeating: field, count: 6) + text).utf8)
        let results = await verifyDKIM(many, resolver: keys, maxSignatures: 5)
        #expect(results.map(\.result) == [.pass, .pass, .pass, .pass, .pass, .policy, .policy])
        #expect(results[6].reason == "not evaluated: more than 5 signatures")
        #expect(results[6].domain == "example.test")
        #expect(keys.questions == [Self.s2048])  // one lookup per key
    }

    @Test func malformedSignatureIsNeutral() async throws {
        let message = replacing(
            "a=rsa-sha256", with: "a=rsa-sha1", in: try DKIMFixtures.message("rsa-relaxed-relaxed.eml"))
        let results = await verifyDKIM(message, resolver: keys)
        #expect(results.map(\.result) == [.neutral])
        #expect(results.first?.reason == "rsa-sha1 is no longer accepted (RFC 8301)")
        #expect(results.first?.domain == "example.test")
        #expect(keys.questions.isEmpty)
    }

    @Test func overlongHeaderSectionIsPermerror() async throws {
        let message = try DKIMFixtures.message("rsa-relaxed-relaxed.eml")
        let results = await verifyDKIM(message, resolver: keys, headerLimit: 700)
        #expect(results.map(\.result) == [.permerror])
        #expect(results.first?.reason == "header section longer than 700 octets")
    }
}

@Suite struct DKIMSignatureParseTests {
    static let base = "v=1; a=rsa-sha256; d=example.test; s=sel; h=from:to; bh=AAAA; b=AAAA"

    static func parse(_ text: String) throws -> DKIMSignature {
        try DKIMSignature(parsing: Array(text.utf8))
    }

    @Test func defaultsAndValues() throws {
        let signature = try Self.parse(Self.base)
        #expect(signature.algorithm == .rsaSHA256)
        #expect(signature.headerCanonicalization == .simple && signature.bodyCanonicalization == .simple)
        #expect(signature.identity == "@example.test")
        #expect(signature.signedFields == ["from", "to"])
        #expect(signature.bodyLength == nil && signature.timestamp == nil && signature.expiration == nil)
        let full = try Self.parse(
            "v=1; a=ed25519-sha256; c=relaxed; d=Example.TEST; s=a.b; h=From : Subject;\r\n\tbh=AA\r\n AA; b=A A A A;"
                + " i=J=40ohn@Sub.Example.test; l=12; q=dns/txt; t=100; x=200; z=From:x")
        #expect(full.algorithm == .ed25519SHA256)
        #expect(full.headerCanonicalization == .relaxed && full.bodyCanonicalization == .simple)
        #expect(full.domain == "example.test")
        #expect(full.identity == "J@ohn@Sub.Example.test")
        #expect(full.signedFields == ["From", "Subject"])
        #expect(full.bodyHash == [0, 0, 0])
        #expect(full.bodyLength == 12 && full.timestamp == 100 && full.expiration == 200)
        #expect(try Self.parse(Self.base + "; l=99999999999999999999999").bodyLength == Int.max)
    }

    @Test(arguments: [
        ("a=rsa-sha256; d=example.test; s=sel; h=from; bh=AAAA; b=AAAA", "missing v= tag"),
        ("v=1; d=example.test; s=sel; h=from; bh=AAAA; b=AAAA", "missing a= tag"),
        ("v=1; a=rsa-sha256; s=sel; h=from; bh=AAAA; b=AAAA", "missing d= tag"),
        ("v=1; a=rsa-sha256; d=example.test; h=from; bh=AAAA; b=AAAA", "missing s= tag"),
        ("v=1; a=rsa-sha256; d=example.test; s=sel; bh=AAAA; b=AAAA", "missing h= tag"),
        ("v=1; a=rsa-sha256; d=example.test; s=sel; h=from; b=AAAA", "missing bh= tag"),
        ("v=1; a=rsa-sha256; d=example.test; s=sel; h=from; bh=AAAA", "missing b= tag"),
        (base.replacingOccurrences(of: "v=1", with: "v=2"), "unsupported version v=2"),
        (base.replacingOccurrences(of: "rsa-sha256", with: "rsa-sha1"), "rsa-sha1 is no longer accepted (RFC 8301)"),
        (base.replacingOccurrences(of: "rsa-sha256", with: "rsa-md5"), "unsupported algorithm a=rsa-md5"),
        (base + "; c=relaxed/fancy", "unsupported canonicalization c=relaxed/fancy"),
        (base + "; c=relaxed/simple/x", "unsupported canonicalization c=relaxed/simple/x"),
        (base.replacingOccurrences(of: "d=example.test", with: "d=test"), "malformed domain d=test"),
        (base.replacingOccurrences(of: "d=example.test", with: "d=exa mple.test"), "malformed domain d=exa mple.test"),
        (base.replacingOccurrences(of: "s=sel", with: "s=se/l"), "malformed selector s=se/l"),
        (base.replacingOccurrences(of: "h=from:to", with: "h=to:subject"), "From is not signed (h= lacks from)"),
        (base.replacingOccurrences(of: "h=from:to", with: "h=from::to"), "malformed h= list"),
        (base + "; i=a@example.org", "identity i=a@example.org is not within d=example.test"),
        (base + "; i=a@badexample.test", "identity i=a@badexample.test is not within d=example.test"),
        (base + "; i=nobody", "malformed identity i=nobody"),
        (base + "; i=a=4@example.test", "malformed identity i=a=4@example.test"),
        (base + "; l=-1", "malformed body length l=-1"),
        (base + "; q=http/well-known", "unsupported query method q=http/well-known"),
        (base + "; t=abc", "malformed timestamp t=abc"),
        (base + "; t=1234567890123", "malformed timestamp t=1234567890123"),
        (base + "; x=1x", "malformed expiration x=1x"),
        (base + "; t=200; x=100", "expiration x= is not after timestamp t="),
        (base.replacingOccurrences(of: "b=AAAA", with: "b=A*AA"), "b= is not base64"),
        (base.replacingOccurrences(of: "bh=AAAA", with: "bh="), "bh= is not base64"),
        (base + "; a=rsa-sha256", "tag a= appears more than once"),
    ])
    func rejects(text: String, reason: String) {
        #expect(throws: DKIMSignatureError(reason)) { try Self.parse(text) }
    }
}
