import NIOCore
import Testing

@testable import SMTPProtocol

/// Dialogues against the session state machine alone: each step is a command line and the
/// reply code the session must give, with a policy that knows example.test's users.
@Suite struct SMTPServerSessionTests {
    struct Outcome: Equatable {
        var code: Int
        var closes = false
    }

    /// Runs `lines` through a session, answering policy and queue requests like a server
    /// whose only local users are alice and bob at example.test, and returns each reply code.
    static func run(
        _ lines: [String], configuration: SMTPServerSession.Configuration = .init(hostname: "mx.example.test"),
        content: (SMTPServerSession) -> SMTPReply? = { _ in nil }
    ) -> [Outcome] {
        var session = SMTPServerSession(configuration: configuration)
        var outcomes: [Outcome] = []
        for line in lines where outcomes.last?.closes != true {
            if line == "<TLS>" {
                session.tlsStarted()
                continue
            }
            var action =
                session.awaitsSASLResponse
                ? session.receiveSASLResponse(line)
                : session.receive(
                    Result { () throws(SMTPCommandError) in try SMTPCommand.parse(ByteBuffer(string: line)) })
            while true {
                switch action {
                case .send(let reply):
                    outcomes.append(Outcome(code: reply.code))
                case .sendAndClose(let reply):
                    outcomes.append(Outcome(code: reply.code, closes: true))
                case .verifySender:
                    action = session.senderVerdict(nil)
                    continue
                case .verifyRecipient(let path, let parameters):
                    let local = ["alice@example.test", "bob@example.test"]
                    let verdict: Result<[String], RecipientRefusal> =
                        local.contains(path.description.lowercased())
                        ? .success([path.description.lowercased()])
                        : .failure(RecipientRefusal(SMTPReply(550, EnhancedStatusCode(5, 1, 1), "unknown")))
                    action = session.recipientVerdict(path, parameters, verdict)
                    continue
                case .beginData(let reply):
                    outcomes.append(Outcome(code: reply.code))
                    action = session.dataReceived(refusal: content(session))
                    continue
                case .receiveChunk(let size, let last):
                    action = session.chunkReceived(size: size, last: last, refusal: nil)
                    continue
                case .discardChunk(_, let reply):
                    outcomes.append(Outcome(code: reply.code))
                case .startTLS(let reply):
                    outcomes.append(Outcome(code: reply.code))
                case .authenticate(let credentials):
                    // The only account: alice@example.test with password "secret"; "blocked"
                    // stands for a client the throttle shuts out.
                    let result: AuthenticationResult =
                        credentials.user == "blocked"
                        ? .blocked
                        : credentials.user == "alice@example.test" && credentials.password == "secret"
                            ? .success(user: credentials.user) : .invalid
                    action = session.authenticationFinished(result)
                    continue
                case .commit:
                    action = session.messageQueued(id: "ID")
                    continue
                }
                break
            }
        }
        return outcomes
    }

    static func codes(
        _ lines: [String], configuration: SMTPServerSession.Configuration = .init(hostname: "mx.example.test")
    ) -> [Int] {
        run(lines, configuration: configuration).map(\.code)
    }

    @Test func aWholeTransaction() {
        #expect(
            Self.codes(["EHLO c", "MAIL FROM:<a@x.test>", "RCPT TO:<alice@example.test>", "DATA", "QUIT"])
                == [250, 250, 250, 354, 250, 221])
    }

    @Test func recipientsAreJudgedOneByOne() {
        #expect(
            Self.codes([
                "EHLO c", "MAIL FROM:<a@x.test>", "RCPT TO:<alice@example.test>", "RCPT TO:<nobody@example.test>",
                "RCPT TO:<bob@example.test>", "DATA",
            ]) == [250, 250, 250, 550, 250, 354, 250])
    }

    @Test(arguments: [
        (["MAIL FROM:<a@x.test>"], [503]),
        (["HELO c", "RCPT TO:<alice@example.test>"], [250, 503]),
        (["HELO c", "DATA"], [250, 503]),
        (["HELO c", "MAIL FROM:<a@x.test>", "MAIL FROM:<a@x.test>"], [250, 250, 503]),
        (["HELO c", "MAIL FROM:<a@x.test>", "DATA"], [250, 250, 554]),
        (["HELO c", "MAIL FROM:<a@x.test>", "RCPT TO:<nobody@example.test>", "DATA"], [250, 250, 550, 554]),
        (["HELO c", "MAIL FROM:<a@x.test> SIZE=10"], [250, 555]),
        (["EHLO c", "MAIL FROM:<a@x.test> SIZE=999999999"], [250, 552]),
        (["EHLO c", "MAIL FROM:<a@x.test> BODY=BINARYMIME"], [250, 555]),
        (["EHLO c", "MAIL FROM:<ü@x.test>"], [250, 553]),
        (["EHLO c", "MAIL FROM:<ü@x.test> SMTPUTF8", "RCPT TO:<ü@example.test>"], [250, 250, 550]),
        (["EHLO c", "MAIL FROM:<a@x.test>", "RCPT TO:<ü@example.test>"], [250, 250, 553]),
        (["EHLO c", "BDAT 10 LAST"], [250, 503]),
        (["EHLO c", "STARTTLS"], [250, 502]),
        (["EHLO c", "AUTH PLAIN"], [250, 503]),
        (["EHLO c", "VRFY alice"], [250, 252]),
        (["EHLO c", "EXPN staff"], [250, 502]),
        (["EHLO c", "HELP"], [250, 214]),
        (["EHLO c", "NOOP", "RSET"], [250, 250, 250]),
        (["FOO"], [500]),
        (["EHLO"], [501]),
    ])
    func repliesForEveryCommand(lines: [String], expected: [Int]) {
        #expect(Self.codes(lines) == expected)
    }

    @Test func rsetAndEhloEndTheTransaction() {
        #expect(
            Self.codes(["EHLO c", "MAIL FROM:<a@x.test>", "RSET", "RCPT TO:<alice@example.test>"]) == [
                250, 250, 250, 503,
            ])
        #expect(
            Self.codes(["EHLO c", "MAIL FROM:<a@x.test>", "EHLO c", "MAIL FROM:<a@x.test>"]) == [250, 250, 250, 250])
    }

    @Test func tooManyRecipients() {
        var configuration = SMTPServerSession.Configuration(hostname: "h")
        configuration.limits.recipients = 2
        let lines = ["EHLO c", "MAIL FROM:<a@x.test>"] + Array(repeating: "RCPT TO:<alice@example.test>", count: 3)
        #expect(Self.codes(lines, configuration: configuration) == [250, 250, 250, 250, 452])
    }

    @Test func tooManyErrorsCloseTheSession() {
        var configuration = SMTPServerSession.Configuration(hostname: "h")
        configuration.limits.errorsPerSession = 3
        let outcomes = Self.run(["FOO", "BAR", "BAZ", "NOOP"], configuration: configuration)
        #expect(outcomes.map(\.code) == [500, 500, 421])
        #expect(outcomes.last?.closes == true)
    }

    @Test func ehloAdvertisesTheExtensions() {
        var session = SMTPServerSession(configuration: .init(hostname: "mx.example.test"))
        guard case .send(let reply) = session.receive(.ehlo(domain: "c")) else {
            Issue.record("no reply")
            return
        }
        #expect(reply.lines.first == "mx.example.test")
        for keyword in [
            "PIPELINING", "SIZE 26214400", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING", "DSN",
        ] {
            #expect(reply.lines.contains(keyword))
        }
        #expect(!reply.lines.contains { $0.hasPrefix("STARTTLS") || $0.hasPrefix("AUTH") })
        #expect(reply.enhanced == nil)
    }

    @Test func startTLSAndAuthAreOfferedOnlyWhereAllowed() {
        var session = SMTPServerSession(
            configuration: .init(hostname: "h", tlsAvailable: true, authAvailable: true, authRequired: true))
        guard case .send(let before) = session.receive(.ehlo(domain: "c")) else { return }
        #expect(before.lines.contains("STARTTLS"))
        #expect(!before.lines.contains { $0.hasPrefix("AUTH") })
        guard case .startTLS = session.receive(.starttls) else {
            Issue.record("STARTTLS refused")
            return
        }
        session.tlsStarted()
        #expect(session.phase == .connected)
        guard case .send(let after) = session.receive(.ehlo(domain: "c")) else { return }
        #expect(!after.lines.contains("STARTTLS"))
        #expect(after.lines.contains("AUTH PLAIN LOGIN"))
        guard case .send(let refused) = session.receive(.mail(.null, MailParameters())) else { return }
        #expect(refused.code == 530)
    }

    /// RFC 8689 §2: REQUIRETLS is advertised, and taken, only under TLS.
    @Test func requireTLSOnlyUnderTLS() {
        var session = SMTPServerSession(configuration: .init(hostname: "h", tlsAvailable: true))
        guard case .send(let before) = session.receive(.ehlo(domain: "c")) else { return }
        #expect(!before.lines.contains("REQUIRETLS"))
        guard case .send(let refused) = session.receive(.mail(.null, MailParameters(requireTLS: true))) else {
            Issue.record("REQUIRETLS taken in plaintext")
            return
        }
        #expect(refused.code == 555 && refused.enhanced == EnhancedStatusCode(5, 5, 4))
        guard case .startTLS = session.receive(.starttls) else { return }
        session.tlsStarted()
        guard case .send(let after) = session.receive(.ehlo(domain: "c")) else { return }
        #expect(after.lines.contains("REQUIRETLS"))
        guard case .verifySender(_, let parameters) = session.receive(.mail(.null, MailParameters(requireTLS: true)))
        else {
            Issue.record("REQUIRETLS refused under TLS")
            return
        }
        #expect(parameters.requireTLS)
    }

    @Test func bdatChunksThenLast() {
        #expect(
            Self.codes([
                "EHLO c", "MAIL FROM:<a@x.test>", "RCPT TO:<alice@example.test>", "BDAT 5", "BDAT 3 LAST", "DATA",
            ])
                == [250, 250, 250, 250, 250, 503])
    }

    @Test func dataRefusedForContentEndsTheTransaction() {
        let outcomes = Self.run(["EHLO c", "MAIL FROM:<a@x.test>", "RCPT TO:<alice@example.test>", "DATA", "DATA"]) {
            _ in
            SMTPReply(552, EnhancedStatusCode(5, 3, 4), "too big")
        }
        #expect(outcomes.map(\.code) == [250, 250, 250, 354, 552, 503])
    }

    @Test func queuedReplyNamesTheID() {
        var session = SMTPServerSession(configuration: .init(hostname: "h"))
        _ = session.receive(.ehlo(domain: "c"))
        _ = session.receive(.mail(.null, MailParameters()))
        _ = session.senderVerdict(nil)
        let path = ForwardPath.mailbox(Mailbox(localPart: "a", domain: .name("example.test")))
        _ = session.receive(.rcpt(path, RecipientParameters()))
        _ = session.recipientVerdict(path, RecipientParameters(), .success(["a@example.test"]))
        _ = session.receive(.data)
        guard case .commit(let transaction) = session.dataReceived(refusal: nil) else {
            Issue.record("no commit")
            return
        }
        #expect(transaction.recipients.map(\.deliverTo) == [["a@example.test"]])
        #expect(
            session.messageQueued(id: "0ABC")
                == .send(SMTPReply(250, EnhancedStatusCode(2, 0, 0), "Ok: queued as 0ABC")))
        #expect(session.transaction == nil)
    }

    @Test func greetingAndShutdown() {
        var session = SMTPServerSession(configuration: .init(hostname: "mx.example.test"))
        #expect(session.greeting().description == "220 mx.example.test ESMTP Tern")
        guard case .sendAndClose(let reply) = session.shuttingDown() else { return }
        #expect(reply.description.hasPrefix("421 4.3.2"))
    }
}
