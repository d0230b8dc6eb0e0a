import NIOCore
import Testing

@testable import SMTPProtocol

/// AUTH (RFC 4954) against the session alone: a submission listener with STARTTLS, where the
/// only account is alice@example.test with password "secret" (see `SMTPServerSessionTests.run`).
/// "<TLS>" stands for a finished handshake.
@Suite struct SMTPServerSessionAuthTests {
    static let submission = SMTPServerSession.Configuration(
        hostname: "mx.example.test", tlsAvailable: true, authAvailable: true, authRequired: true)

    /// base64 of "\0alice@example.test\0secret" and friends.
    static func plain(_ user: String, _ password: String, as authzid: String = "") -> String {
        Base64.encode(Array("\(authzid)\0\(user)\0\(password)".utf8))
    }

    static func b64(_ text: String) -> String { Base64.encode(Array(text.utf8)) }

    static let secure = ["EHLO c", "STARTTLS", "<TLS>", "EHLO c"]

    static let dialogues: [(lines: [String], expected: [Int])] = [
        // Before TLS: not offered, refused, and MAIL needs STARTTLS first.
        (["EHLO c", "AUTH PLAIN \(plain("alice@example.test", "secret"))"], [250, 503]),
        (["EHLO c", "MAIL FROM:<alice@example.test>"], [250, 530]),
        // PLAIN with an initial response, and in two steps.
        (
            secure + ["AUTH PLAIN \(plain("alice@example.test", "secret"))", "MAIL FROM:<alice@example.test>"],
            [250, 220, 250, 235, 250]
        ),
        (secure + ["AUTH PLAIN", plain("alice@example.test", "secret")], [250, 220, 250, 334, 235]),
        // An authorization identity equal to the user is fine; another one is not.
        (
            secure + ["AUTH PLAIN \(plain("alice@example.test", "secret", as: "alice@example.test"))"],
            [250, 220, 250, 235]
        ),
        (
            secure + ["AUTH PLAIN \(plain("alice@example.test", "secret", as: "bob@example.test"))"],
            [250, 220, 250, 501]
        ),
        // LOGIN: user name, then password.
        (secure + ["AUTH LOGIN", b64("alice@example.test"), b64("secret")], [250, 220, 250, 334, 334, 235]),
        (secure + ["AUTH LOGIN \(b64("alice@example.test"))", b64("secret")], [250, 220, 250, 334, 235]),
        // Wrong password, then MAIL still refused; a second AUTH after success is refused.
        (
            secure + ["AUTH PLAIN \(plain("alice@example.test", "wrong"))", "MAIL FROM:<a@x.test>"],
            [250, 220, 250, 535, 530]
        ),
        (
            secure + [
                "AUTH PLAIN \(plain("alice@example.test", "secret"))",
                "AUTH PLAIN \(plain("alice@example.test", "secret"))",
            ],
            [250, 220, 250, 235, 503]
        ),
        // Cancel, undecodable data, unknown mechanism, AUTH without EHLO, AUTH in a transaction.
        (secure + ["AUTH LOGIN", "*", "NOOP"], [250, 220, 250, 334, 501, 250]),
        (secure + ["AUTH PLAIN", "!!!!", "NOOP"], [250, 220, 250, 334, 501, 250]),
        (secure + ["AUTH PLAIN", "YQ", "NOOP"], [250, 220, 250, 334, 501, 250]),
        (secure + ["AUTH CRAM-MD5"], [250, 220, 250, 504]),
        (["EHLO c", "STARTTLS", "<TLS>", "AUTH PLAIN \(plain("alice@example.test", "secret"))"], [250, 220, 503]),
        // The empty response "=" to PLAIN carries no user.
        (secure + ["AUTH PLAIN ="], [250, 220, 250, 501]),
    ]

    @Test(arguments: dialogues)
    func dialogue(lines: [String], expected: [Int]) {
        #expect(SMTPServerSessionTests.codes(lines, configuration: Self.submission) == expected)
    }

    @Test func aTransactionInProgressRefusesAuth() {
        var configuration = Self.submission
        configuration.authRequired = false
        let lines = Self.secure + ["MAIL FROM:<a@x.test>", "AUTH PLAIN \(Self.plain("alice@example.test", "secret"))"]
        #expect(SMTPServerSessionTests.codes(lines, configuration: configuration) == [250, 220, 250, 250, 503])
    }

    @Test func repeatedFailuresEndTheSession() {
        let wrong = "AUTH PLAIN \(Self.plain("alice@example.test", "wrong"))"
        let outcomes = SMTPServerSessionTests.run(
            Self.secure + [wrong, wrong, wrong, "NOOP"], configuration: Self.submission)
        #expect(outcomes.map(\.code) == [250, 220, 250, 535, 535, 421])
        #expect(outcomes.last?.closes == true)
    }

    @Test func aBlockedClientIsDisconnected() {
        let outcomes = SMTPServerSessionTests.run(
            Self.secure + ["AUTH PLAIN \(Self.plain("blocked", "x"))", "NOOP"], configuration: Self.submission)
        #expect(outcomes.map(\.code) == [250, 220, 250, 421])
        #expect(outcomes.last?.closes == true)
    }

    @Test func anOverlongResponseEndsTheExchange() {
        var session = SMTPServerSession(configuration: Self.submission)
        _ = session.receive(.ehlo(domain: "c"))
        _ = session.receive(.starttls)
        session.tlsStarted()
        _ = session.receive(.ehlo(domain: "c"))
        _ = session.receive(.auth(mechanism: "PLAIN", initialResponse: nil))
        #expect(session.awaitsSASLResponse)
        guard case .send(let reply) = session.receiveOverlongLine() else {
            Issue.record("no reply")
            return
        }
        #expect(reply.code == 500)
        #expect(!session.awaitsSASLResponse)
        #expect(session.phase == .ready)
    }

    @Test func credentialsNeverDescribeThePassword() {
        let credentials = SASLCredentials(mechanism: "PLAIN", user: "alice@example.test", password: "hunter2")
        #expect(!"\(credentials)".contains("hunter2"))
        #expect(!String(reflecting: credentials).contains("hunter2"))
    }
}

@Suite struct Base64Tests {
    @Test(arguments: [
        ("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ])
    func rfc4648Vectors(plain: String, encoded: String) {
        #expect(Base64.encode(Array(plain.utf8)) == encoded)
        #expect(Base64.decode(encoded) == Array(plain.utf8))
    }

    @Test(arguments: ["Zg", "Zg=", "Z===", "Zh==", "Zm9=", "Zm 9v", "Zm9v\n", "====", "Zg==Zg==", "*"])
    func refusesWhatIsNotCanonical(text: String) {
        #expect(Base64.decode(text) == nil)
    }
}
