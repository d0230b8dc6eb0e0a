import Foundation
import NIOCore
import SMTPProtocol
import Testing

@testable import MailPolicy

/// Password schemes against hashes Dovecot's own `doveadm pw` made for "correct horse".
@Suite struct PasswordHashTests {
    static let doveadm: [String] = [
        "{SHA512-CRYPT}$6$TK1jYn9yhY3Y3p54$/RkEXdP64973Nvs8f8ymgVnDWJHod9fb03YB3HE8wiEeXe2qO0RXYk8WGdt3Y.EIuMfZbgX.cTFOyrkL7qfTD.",
        "{SHA256-CRYPT}$5$93jlDlyxhORKQLOh$AkWiQqQYdOW.zROGR04tto4eEwMLnvdPYg/QVJF5f//",
        "{BLF-CRYPT}$2y$05$GBYl8ZkXNkh7Pm9NsvIm1umslpZ8cx1gySR80e/u6Cv1v.uFMBR7O",
        "{CRYPT}$1$saltsalt$NuzA7WTAelpl95xgBGWN60",
        "$6$TK1jYn9yhY3Y3p54$/RkEXdP64973Nvs8f8ymgVnDWJHod9fb03YB3HE8wiEeXe2qO0RXYk8WGdt3Y.EIuMfZbgX.cTFOyrkL7qfTD.",
        "{PLAIN}correct horse",
        "{CLEARTEXT}correct horse",
    ]

    @Test(arguments: doveadm)
    func verifiesDovecotHashes(field: String) throws {
        let hash = try PasswordHash(field: field)
        #expect(hash.matches("correct horse"))
        #expect(!hash.matches("correct horsE"))
        #expect(!hash.matches(""))
        #expect(!hash.matches("correct horse "))
        #expect(!hash.matches("correct\0horse"))
    }

    @Test(arguments: [
        ("{MD5-CRYPT}$1$x$y", PasswordHash.ParseError.unknownScheme("MD5-CRYPT")),
        ("{SHA512-CRYPT}$5$abc$def", .malformed(.sha512Crypt)),
        ("{BLF-CRYPT}$6$abc", .malformed(.blfCrypt)),
        ("{CRYPT}", .malformed(.crypt)),
        ("!locked", .malformed(.crypt)),
    ])
    func refusesWhatItCannotCheck(field: String, error: PasswordHash.ParseError) {
        #expect(throws: error) { try PasswordHash(field: field) }
    }

    @Test(arguments: [PasswordHash.Scheme.sha512Crypt, .sha256Crypt, .blfCrypt])
    func makesHashesThatVerify(scheme: PasswordHash.Scheme) throws {
        let hash = try #require(PasswordHash.make(password: "s3cret: ü", scheme: scheme))
        #expect(hash.scheme == scheme)
        #expect(hash.matches("s3cret: ü"))
        #expect(!hash.matches("s3cret: u"))
        // A fresh salt each time.
        #expect(PasswordHash.make(password: "s3cret: ü", scheme: scheme)?.encoded != hash.encoded)
        // What it writes, it reads back.
        #expect(try PasswordHash(field: hash.encoded) == hash)
        #expect(!"\(hash)".contains(hash.encoded.dropFirst(scheme.rawValue.count + 6)))
    }
}

@Suite struct PasswdFileTests {
    @Test func readsUsersAndReportsBadLines() {
        let text = """
            # Tern users
            Alice@Example.test:{PLAIN}one::::::
            bob@example.test:{SHA256-CRYPT}$5$93jlDlyxhORKQLOh$AkWiQqQYdOW.zROGR04tto4eEwMLnvdPYg/QVJF5f//:1000:1000::/home/bob::

            nocolon
            carol@example.test:{NOPE}x
            alice@example.test:{PLAIN}two
            """
        let (entries, problems) = PasswdFile.parse(text)
        #expect(entries.map(\.user) == ["alice@example.test", "bob@example.test"])
        #expect(entries[0].password.matches("one"))
        #expect(entries[1].password.matches("correct horse"))
        #expect(problems.map(\.line) == [5, 6, 7])
        // No problem ever quotes a password field.
        #expect(!problems.contains { $0.description.contains("two") || $0.description.contains("{NOPE}x") })
    }

    @Test func settingReplacesInPlaceOrAppends() throws {
        let hash = try PasswordHash(field: "{PLAIN}new")
        let text = "# users\nalice@example.test:{PLAIN}old:1000:1000::/home/alice::\nbob@example.test:{PLAIN}b\n"
        #expect(
            PasswdFile.setting("ALICE@example.test", to: hash, in: text)
                == "# users\nalice@example.test:{PLAIN}new:1000:1000::/home/alice::\nbob@example.test:{PLAIN}b\n")
        #expect(
            PasswdFile.setting("carol@example.test", to: hash, in: text)
                == text + "carol@example.test:{PLAIN}new\n")
        #expect(PasswdFile.setting("carol@example.test", to: hash, in: "") == "carol@example.test:{PLAIN}new\n")
    }

    @Test(arguments: [
        ("alice@example.test", true), ("alice", true), ("", false), ("a:b", false), ("a b", false), ("a\nb", false),
        ("#x", false),
    ])
    func userNames(name: String, valid: Bool) {
        #expect(PasswdFile.isValidUserName(name) == valid)
    }

    @Test func theDatabaseFollowsTheFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tern-passwd-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("users.passwd").path
        let users = UserDatabase(path: path)
        #expect(!users.verify(user: "alice@example.test", password: "one"))
        try "alice@example.test:{PLAIN}one\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(users.verify(user: "ALICE@example.test", password: "one"))
        #expect(!users.verify(user: "alice@example.test", password: "One"))
        // Replaced (a new inode, as `tern user passwd` does it): read again at once.
        try "alice@example.test:{PLAIN}two\nbob@example.test:{PLAIN}b\n".write(
            toFile: path, atomically: true, encoding: .utf8)
        #expect(users.verify(user: "alice@example.test", password: "two"))
        #expect(users.contains("bob@example.test"))
        try FileManager.default.removeItem(atPath: path)
        #expect(!users.contains("bob@example.test"))
    }
}

@Suite struct AuthenticationThrottleTests {
    @Test func addressesAndUsersAreShutOutForTheWindow() {
        let throttle = AuthenticationThrottle(limits: .init(perAddress: 3, perUser: 5, window: 60))
        for second in 0..<3 {
            #expect(throttle.check(address: "192.0.2.1", user: "alice", now: second) == .allowed)
            throttle.recordFailure(address: "192.0.2.1", user: "alice", now: second)
        }
        #expect(throttle.check(address: "192.0.2.1", user: "bob", now: 10) == .addressBlocked)
        #expect(throttle.check(address: "192.0.2.2", user: "alice", now: 10) == .allowed)
        // Guessing alice's password from other addresses reaches her limit.
        throttle.recordFailure(address: "192.0.2.2", user: "ALICE", now: 11)
        throttle.recordFailure(address: "192.0.2.3", user: "alice", now: 12)
        #expect(throttle.check(address: "192.0.2.4", user: "alice", now: 13) == .userBlocked)
        #expect(throttle.check(address: "192.0.2.4", user: "bob", now: 13) == .allowed)
        // The window slides: old failures stop counting.
        #expect(throttle.check(address: "192.0.2.1", user: "bob", now: 61) == .allowed)
        #expect(throttle.check(address: "192.0.2.4", user: "alice", now: 71) == .allowed)
    }

    @Test func memoryStaysBounded() {
        let throttle = AuthenticationThrottle(limits: .init(perAddress: 2, perUser: 2, window: 60), maxTracked: 100)
        for index in 0..<1000 {
            throttle.recordFailure(address: "10.0.\(index / 256).\(index % 256)", user: "u\(index)", now: index / 100)
        }
        // The most recent offenders are still known.
        throttle.recordFailure(address: "10.0.3.231", user: nil, now: 10)
        #expect(throttle.check(address: "10.0.3.231", user: nil, now: 10) == .addressBlocked)
    }
}

@Suite struct SenderPolicyTests {
    let policy = SenderPolicy(
        directory: FixtureDirectory(), extraSenders: ["Alice@example.test": ["news@other.test", "@lists.test"]])

    func reversePath(_ text: String) throws -> ReversePath {
        guard case .mail(let path, _) = try SMTPCommand.parse(ByteBuffer(string: "MAIL FROM:\(text)")) else {
            Issue.record("not a MAIL")
            return .null
        }
        return path
    }

    @Test(arguments: [
        ("<alice@example.test>", true), ("<ALICE@Example.TEST>", true), ("<alice+news@example.test>", true),
        ("<sales@example.test>", true), ("<news@other.test>", true), ("<anyone@lists.test>", true), ("<>", true),
        ("<bob@example.test>", false), ("<abuse@example.test>", false), ("<alice@elsewhere.test>", false),
        ("<carol@other.test>", false), ("<alice@[192.0.2.1]>", false), ("<\"alice\"@example.test>", true),
    ])
    func authenticatedUsersSendOnlyAsThemselves(sender: String, allowed: Bool) throws {
        let client = ClientFacts(
            address: IPAddress("192.0.2.1"), isTrusted: false, authenticatedUser: "alice@example.test")
        let verdict = policy.verify(try reversePath(sender), client: client)
        #expect((verdict == nil) == allowed)
        if let verdict {
            #expect(verdict.code == 553)
            #expect(verdict.enhanced == EnhancedStatusCode(5, 7, 1))
        }
    }

    @Test func unauthenticatedClientsAndTheSwitchAreLeftAlone() throws {
        let stranger = ClientFacts(address: IPAddress("192.0.2.1"), isTrusted: false)
        #expect(policy.verify(try reversePath("<bob@example.test>"), client: stranger) == nil)
        var open = policy
        open.restrictAuthenticatedSenders = false
        let alice = ClientFacts(address: nil, isTrusted: false, authenticatedUser: "alice@example.test")
        #expect(open.verify(try reversePath("<bob@example.test>"), client: alice) == nil)
    }
}
