import NIOCore
import Testing

@testable import SMTPProtocol

/// Plays the driver for a client session: the server's replies come from a script, commands
/// and results are recorded. TLS handshakes always succeed and content is "sent" at once.
private struct Dialogue {
    var session: SMTPClientSession
    var envelopes: [SMTPClientSession.Envelope]
    /// Each write, its lines joined by "|": a pipelined group is one entry.
    var written: [String] = []
    var results: [SMTPClientSession.TransactionResult] = []
    var failure: SMTPClientSession.Failure?
    var closed = false
    var contentSent = 0

    init(_ configuration: SMTPClientSession.Configuration, _ envelopes: [SMTPClientSession.Envelope]) {
        self.session = SMTPClientSession(configuration: configuration)
        self.envelopes = envelopes
    }

    mutating func perform(_ action: SMTPClientSession.Action) {
        switch action {
        case .none: break
        case .send(let buffer):
            written.append(
                String(buffer: buffer).split(separator: "\r\n", omittingEmptySubsequences: false).dropLast().joined(
                    separator: "|"))
        case .startTLS: perform(session.tlsEstablished())
        case .ready: next()
        case .sendMessage:
            contentSent += 1
            perform(session.messageSent())
        case .finished(let result):
            results.append(result)
            if result.failure == nil { next() } else { closed = true }
        case .fail(let failure):
            self.failure = failure
            closed = true
        case .close: closed = true
        }
    }

    mutating func next() {
        if envelopes.isEmpty {
            perform(session.quit())
        } else {
            perform(session.begin(envelopes.removeFirst()))
        }
    }

    /// Feeds replies, each written as a server would send it (several lines joined by "\n").
    mutating func play(_ replies: [String]) {
        var parser = SMTPReplyParser()
        for text in replies {
            parser.append(ByteBuffer(string: text.replacingOccurrences(of: "\n", with: "\r\n") + "\r\n"))
            while let reply = try! parser.nextReply() { perform(session.receive(reply)) }
        }
    }

    func codes(_ index: Int = 0) -> [Int?] { results[index].replies.map { $0?.code } }
}

private let ehloFull = "250-mx.example.net\n250-PIPELINING\n250-SIZE 1000\n250-8BITMIME\n250-DSN\n250 SMTPUTF8"
private let client = SMTPClientSession.Configuration(heloName: "mx.example.test")
private let twoRecipients = SMTPClientSession.Envelope(
    sender: "alice@example.test",
    recipients: [.init(address: "bob@example.net"), .init(address: "carol@example.net")], size: 100)

@Suite struct SMTPClientSessionTests {
    @Test func pipelinesTheWholeTransactionAndDecidesEachRecipientOnItsOwn() {
        var dialogue = Dialogue(client, [twoRecipients])
        dialogue.play([
            "220 mx.example.net ESMTP", ehloFull, "250 2.1.0 Ok", "250 2.1.5 Ok", "550 5.1.1 no such user",
            "354 go ahead", "250 2.0.0 queued as X", "221 bye",
        ])
        #expect(
            dialogue.written == [
                "EHLO mx.example.test",
                "MAIL FROM:<alice@example.test> SIZE=100|RCPT TO:<bob@example.net>|RCPT TO:<carol@example.net>|DATA",
                "QUIT",
            ])
        #expect(dialogue.codes() == [250, 550])
        #expect(dialogue.results[0].replies[1]?.enhanced == EnhancedStatusCode(5, 1, 1))
        #expect(dialogue.contentSent == 1)
        #expect(dialogue.closed)
    }

    @Test func withoutPipeliningSendsOneCommandPerReply() {
        var dialogue = Dialogue(client, [twoRecipients])
        dialogue.play([
            "220 ok", "250-mx\n250 SIZE", "250 ok", "250 ok", "250 ok", "354 go", "250 queued", "221 bye",
        ])
        #expect(
            dialogue.written == [
                "EHLO mx.example.test", "MAIL FROM:<alice@example.test> SIZE=100", "RCPT TO:<bob@example.net>",
                "RCPT TO:<carol@example.net>", "DATA", "QUIT",
            ])
        #expect(dialogue.codes() == [250, 250])
    }

    @Test func fallsBackToHeloWhenEhloIsRefused() {
        var dialogue = Dialogue(client, [twoRecipients])
        dialogue.play([
            "220 old", "502 5.5.1 what?", "250 old", "250 ok", "250 ok", "250 ok", "354 go", "250 ok", "221 bye",
        ])
        #expect(
            Array(dialogue.written.prefix(3)) == [
                "EHLO mx.example.test", "HELO mx.example.test", "MAIL FROM:<alice@example.test>",
            ])
        #expect(dialogue.codes() == [250, 250])
    }

    @Test(arguments: [
        (["421 4.3.2 busy"], SMTPClientSession.Stage.greeting),
        (["554 go away"], .greeting),
        (["220 ok", "421 4.3.2 closing"], .hello),
        (["220 ok", "502 no", "550 no HELO either"], .hello),
    ])
    func refusalsBeforeMailFailTheSession(replies: [String], stage: SMTPClientSession.Stage) {
        var dialogue = Dialogue(client, [twoRecipients])
        dialogue.play(replies)
        guard case .refused(let failedStage, let reply) = dialogue.failure else {
            Issue.record("expected a refusal, got \(String(describing: dialogue.failure))")
            return
        }
        #expect(failedStage == stage)
        #expect(reply.code == Int(replies.last!.prefix(3)))
        #expect(dialogue.results.isEmpty)
    }

    @Test func aRefusedSenderDecidesEveryRecipientAndPipelinedRepliesAreConsumed() {
        var dialogue = Dialogue(client, [twoRecipients, twoRecipients])
        dialogue.play([
            "220 ok", ehloFull, "451 4.3.0 sender check failed", "503 5.5.1 no MAIL", "503 5.5.1 no MAIL",
            "503 5.5.1 no valid recipients",
            // The second transaction starts without RSET: the server holds no transaction.
            "250 ok", "250 ok", "250 ok", "354 go", "250 ok", "221 bye",
        ])
        #expect(dialogue.codes(0) == [451, 451])
        #expect(dialogue.codes(1) == [250, 250])
        #expect(dialogue.written[2].hasPrefix("MAIL FROM:"))
    }

    @Test func refusedRecipientsEndTheTransactionAndTheNextStartsWithReset() {
        var dialogue = Dialogue(client, [twoRecipients, twoRecipients])
        dialogue.play([
            "220 ok", ehloFull, "250 ok", "550 5.1.1 no", "550 5.1.1 no", "554 5.5.1 no valid recipients",
            "250 2.0.0 reset", "250 ok", "250 ok", "250 ok", "354 go", "250 ok", "221 bye",
        ])
        #expect(dialogue.codes(0) == [550, 550])
        #expect(dialogue.written[2].hasPrefix("RSET|MAIL FROM:"))
        #expect(dialogue.codes(1) == [250, 250])
        #expect(dialogue.contentSent == 1)
    }

    @Test func withoutPipeliningNoDataIsSentWhenEveryRecipientIsRefused() {
        var dialogue = Dialogue(client, [twoRecipients])
        dialogue.play(["220 ok", "250 mx", "250 ok", "550 no", "450 later", "221 bye"])
        #expect(dialogue.codes() == [550, 450])
        #expect(!dialogue.written.contains("DATA"))
        #expect(dialogue.written.last == "QUIT")
    }

    @Test func aRefusedDataDecidesTheAcceptedRecipientsOnly() {
        var dialogue = Dialogue(client, [twoRecipients])
        dialogue.play(["220 ok", ehloFull, "250 ok", "250 ok", "550 no", "354 go", "554 5.7.1 spam", "221 bye"])
        #expect(dialogue.codes() == [554, 550])
    }

    @Test func dataAcceptedWithoutRecipientsGetsAnEmptyEnd() {
        var dialogue = Dialogue(client, [twoRecipients])
        dialogue.play(["220 ok", ehloFull, "250 ok", "550 no", "550 no", "354 go", "554 no recipients", "221 bye"])
        #expect(dialogue.written[1].hasSuffix("DATA"))
        #expect(dialogue.written[2] == ".")
        #expect(dialogue.codes() == [550, 550])
        #expect(dialogue.contentSent == 0)
    }

    @Test func aClosingServerLeavesAcceptedRecipientsUndecided() {
        var dialogue = Dialogue(client, [twoRecipients])
        dialogue.play(["220 ok", ehloFull, "250 ok", "250 ok", "550 5.1.1 no", "421 4.3.2 shutting down"])
        #expect(dialogue.codes() == [nil, 550])
        #expect(dialogue.results[0].failure?.reply?.code == 421)
        #expect(dialogue.closed)
    }

    @Test func aLostConnectionAfterTheContentLeavesItsRecipientsUndecided() {
        var dialogue = Dialogue(client, [twoRecipients])
        dialogue.play(["220 ok", ehloFull, "250 ok", "250 ok", "550 no", "354 go"])
        dialogue.perform(dialogue.session.connectionFailed("connection timed out"))
        #expect(dialogue.codes() == [nil, 550])
        #expect(dialogue.results[0].failure == .connection(stage: .dataEnd, "connection timed out"))
        #expect("\(dialogue.results[0].failure!)" == "connection timed out after end of data")
    }

    @Test(arguments: [
        (SMTPClientSession.Envelope(sender: "a@x", recipients: [.init(address: "b@y")], size: 1001), 552),
        (.init(sender: "a@x", recipients: [.init(address: "b@y")], size: 10, eightBit: true), 554),
        (.init(sender: "a@x", recipients: [.init(address: "b@y")], size: 10, smtpUTF8: true), 553),
    ])
    func whatTheServerCannotTakeIsNotSent(envelope: SMTPClientSession.Envelope, code: Int) {
        var dialogue = Dialogue(client, [envelope])
        dialogue.play(["220 ok", "250-mx\n250-PIPELINING\n250 SIZE 1000", "221 bye"])
        #expect(dialogue.codes() == [code])
        #expect(dialogue.written == ["EHLO mx.example.test", "QUIT"])
    }

    @Test func passesExtensionsOnOnlyWhereOffered() {
        let envelope = SMTPClientSession.Envelope(
            sender: "ålice@example.test",
            recipients: [
                .init(
                    address: "bob@example.net", notify: [.failure, .delay],
                    originalRecipient: OriginalRecipient(addressType: "rfc822", address: "Bob+x=y@example.net")),
                .init(address: "carol@example.net", notify: .never),
            ], size: 10, eightBit: true, smtpUTF8: true, ret: .headers, envelopeID: "id 1")
        var dialogue = Dialogue(client, [envelope])
        dialogue.play(["220 ok", ehloFull])
        #expect(
            dialogue.written.last
                == "MAIL FROM:<ålice@example.test> SIZE=10 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+201"
                + "|RCPT TO:<bob@example.net> NOTIFY=FAILURE,DELAY ORCPT=rfc822;Bob+2Bx+3Dy@example.net"
                + "|RCPT TO:<carol@example.net> NOTIFY=NEVER|DATA")

        var plain = Dialogue(client, [envelope])
        plain.play(["220 ok", "250-mx\n250-8BITMIME\n250 SMTPUTF8"])
        #expect(plain.written.last == "MAIL FROM:<ålice@example.test> BODY=8BITMIME SMTPUTF8")
    }

    @Test func upgradesWithStartTLSAndSaysEhloAgain() {
        var configuration = client
        configuration.startTLS = true
        var dialogue = Dialogue(configuration, [twoRecipients])
        dialogue.play([
            "220 ok", "250-mx\n250-STARTTLS\n250 PIPELINING", "220 2.0.0 ready", "250-mx\n250 PIPELINING",
            "250 ok", "250 ok", "250 ok", "354 go", "250 ok", "221 bye",
        ])
        #expect(Array(dialogue.written.prefix(3)) == ["EHLO mx.example.test", "STARTTLS", "EHLO mx.example.test"])
        #expect(dialogue.session.tlsActive)
        #expect(!dialogue.session.capabilities.startTLS)
        #expect(dialogue.codes() == [250, 250])
    }

    @Test func aRefusedStartTLSGoesOnInPlaintext() {
        var configuration = client
        configuration.startTLS = true
        var dialogue = Dialogue(configuration, [twoRecipients])
        dialogue.play([
            "220 ok", "250-mx\n250 STARTTLS", "454 4.7.0 TLS not available", "250 ok", "250 ok", "250 ok", "354 go",
            "250 ok", "221 bye",
        ])
        #expect(!dialogue.session.tlsActive)
        #expect(dialogue.codes() == [250, 250])
    }

    /// RFC 8689 §4.2.1: REQUIRETLS goes on with MAIL only under TLS to a server that offers it;
    /// otherwise every recipient gets 5.7.30 and nothing is sent.
    @Test(arguments: [
        (["220 ok", "250-mx\n250-STARTTLS\n250 PIPELINING", "220 go", "250-mx\n250-REQUIRETLS\n250 PIPELINING"], true),
        (["220 ok", "250-mx\n250-STARTTLS\n250 PIPELINING", "220 go", "250-mx\n250 PIPELINING"], false),
        (["220 ok", "250-mx\n250-REQUIRETLS\n250 PIPELINING"], false),
    ])
    func requireTLSIsPassedOnOnlyUnderTLSToAServerThatOffersIt(replies: [String], sent: Bool) {
        var configuration = client
        configuration.startTLS = true
        var envelope = twoRecipients
        envelope.requireTLS = true
        var dialogue = Dialogue(configuration, [envelope])
        dialogue.play(replies + (sent ? ["250 ok", "250 ok", "250 ok", "354 go", "250 ok"] : []) + ["221 bye"])
        if sent {
            #expect(dialogue.written.contains { $0.hasPrefix("MAIL FROM:<alice@example.test> REQUIRETLS|") })
            #expect(dialogue.codes() == [250, 250])
        } else {
            #expect(!dialogue.written.contains { $0.hasPrefix("MAIL") })
            #expect(dialogue.results.first?.replies.map { $0?.enhanced?.description } == ["5.7.30", "5.7.30"])
        }
    }

    @Test func lmtpAnswersTheEndOfDataOncePerAcceptedRecipient() {
        let three = SMTPClientSession.Envelope(
            sender: "", recipients: [.init(address: "a@x"), .init(address: "b@x"), .init(address: "c@x")], size: 5)
        var dialogue = Dialogue(SMTPClientSession.Configuration(heloName: "tern", lmtp: true), [three])
        dialogue.play([
            "220 lmtp", "250-dovecot\n250 ENHANCEDSTATUSCODES", "250 ok", "250 ok", "550 5.1.1 no", "250 ok",
            "354 go", "250 2.0.0 <a@x> saved", "452 4.2.2 <c@x> quota", "221 bye",
        ])
        #expect(dialogue.written[0] == "LHLO tern")
        #expect(dialogue.written[1] == "MAIL FROM:<>|RCPT TO:<a@x>|RCPT TO:<b@x>|RCPT TO:<c@x>|DATA")
        #expect(dialogue.codes() == [250, 550, 452])
    }

    @Test func reusesTheSessionForSeveralTransactions() {
        var dialogue = Dialogue(client, [twoRecipients, twoRecipients])
        dialogue.play([
            "220 ok", ehloFull, "250 ok", "250 ok", "250 ok", "354 go", "250 first", "250 ok", "250 ok", "250 ok",
            "354 go", "250 second", "221 bye",
        ])
        #expect(dialogue.results.count == 2)
        #expect(dialogue.results[1].replies.map { $0?.lines } == [["second"], ["second"]])
        #expect(dialogue.written.filter { $0.hasPrefix("EHLO") }.count == 1)
        #expect(dialogue.contentSent == 2)
    }

    @Test func anUnsolicitedReplyEndsTheSession() {
        var dialogue = Dialogue(client, [])
        dialogue.envelopes = []
        dialogue.play(["220 ok"])
        var session = dialogue.session
        _ = session.receive(SMTPReply(250, nil, "mx"))
        #expect(session.isReady)
        #expect(
            session.receive(SMTPReply(421, nil, "idle timeout"))
                == .fail(.unexpectedReply(stage: .idle, SMTPReply(421, nil, "idle timeout"))))
    }

    @Test(arguments: [("id 1", "id+201"), ("a+b=c", "a+2Bb+3Dc"), ("plain", "plain"), ("é", "+C3+A9")])
    func xtextEncodesWhatXtextCannotCarry(text: String, encoded: String) {
        #expect(XText.encode(text) == encoded)
        #expect(XText.decode(Array(encoded.utf8)[...]) == text)
    }
}
