import NIOCore
import Testing

@testable import SMTPProtocol

/// The expected outcome of parsing one line.
typealias ParseOutcome = Result<SMTPCommand, SMTPCommandError>

func parseLine(_ line: String) -> ParseOutcome {
    Result { () throws(SMTPCommandError) in try SMTPCommand.parse(ByteBuffer(string: line)) }
}

func mailbox(_ local: String, _ domain: String, quoted: Bool = false) -> Mailbox {
    Mailbox(localPart: local, domain: .name(domain), localPartWasQuoted: quoted)
}

struct CommandFixture: Sendable, CustomTestStringConvertible {
    var line: String
    var expected: ParseOutcome
    init(_ line: String, _ expected: ParseOutcome) {
        self.line = line
        self.expected = expected
    }
    var testDescription: String { line.debugDescription }
}

@Suite struct SMTPCommandParseTests {
    static let joe = mailbox("joe", "x.test")

    static let commands: [CommandFixture] = [
        // HELO / EHLO: any non-empty argument.
        .init("EHLO client.example.test", .success(.ehlo(domain: "client.example.test"))),
        .init("ehlo client", .success(.ehlo(domain: "client"))),
        .init("EHLO [192.0.2.1]", .success(.ehlo(domain: "[192.0.2.1]"))),
        .init("EHLO  junk_name!  ", .success(.ehlo(domain: "junk_name!"))),
        .init("EHLO foo bar", .success(.ehlo(domain: "foo bar"))),
        .init("HELO x", .success(.helo(domain: "x"))),
        .init("EHLO", .failure(.syntax("EHLO hostname"))),
        .init("EHLO   ", .failure(.syntax("EHLO hostname"))),
        .init("HELO", .failure(.syntax("HELO hostname"))),
        // MAIL: strict and telnet forms.
        .init("MAIL FROM:<joe@x.test>", .success(.mail(.mailbox(joe), MailParameters()))),
        .init("mail from:<joe@x.test>", .success(.mail(.mailbox(joe), MailParameters()))),
        .init("MAIL FROM: <joe@x.test>", .success(.mail(.mailbox(joe), MailParameters()))),
        .init("mail from: joe@x.test", .success(.mail(.mailbox(joe), MailParameters()))),
        .init("MAIL FROM:joe@x.test", .success(.mail(.mailbox(joe), MailParameters()))),
        .init("MAIL FROM:joe@x.test SIZE=10", .success(.mail(.mailbox(joe), MailParameters(size: 10)))),
        .init("MAIL FROM:<joe@x.test> ", .success(.mail(.mailbox(joe), MailParameters()))),
        .init("MAIL FROM:<>", .success(.mail(.null, MailParameters()))),
        .init("MAIL FROM: <>", .success(.mail(.null, MailParameters()))),
        .init("MAIL FROM:<> SIZE=0", .success(.mail(.null, MailParameters(size: 0)))),
        .init("MAIL FROM:<> REQUIRETLS", .success(.mail(.null, MailParameters(requireTLS: true)))),
        .init("MAIL FROM:<> requiretls SIZE=5", .success(.mail(.null, MailParameters(size: 5, requireTLS: true)))),
        .init("MAIL FROM:<> REQUIRETLS=YES", .failure(.unsupportedParameter("REQUIRETLS=YES"))),
        .init("MAIL FROM:<> REQUIRETLS REQUIRETLS", .failure(.syntax("duplicate parameter REQUIRETLS"))),
        .init("MAIL FROM:<@a.test,@b.test:joe@x.test>", .success(.mail(.mailbox(joe), MailParameters()))),
        .init("MAIL FROM", .failure(.syntax("MAIL FROM:<address>"))),
        .init("MAIL", .failure(.syntax("MAIL FROM:<address>"))),
        .init("MAIL FROM:", .failure(.syntax("MAIL FROM:<address>"))),
        .init("MAIL FROM:   ", .failure(.syntax("MAIL FROM:<address>"))),
        .init("MAIL TO:<joe@x.test>", .failure(.syntax("MAIL FROM:<address>"))),
        .init("MAIL FROM <joe@x.test>", .failure(.syntax("MAIL FROM:<address>"))),
        .init("MAIL FROM:<joe@x.test", .failure(.badAddress("missing >"))),
        .init("MAIL FROM:<joe@x.test>x", .failure(.badAddress("text after >"))),
        .init("MAIL FROM:<joe>", .failure(.badAddress("missing @domain"))),
        .init("MAIL FROM:<joe@x.test.>", .failure(.badAddress("trailing dot in domain"))),
        // RCPT.
        .init("RCPT TO:<joe@x.test>", .success(.rcpt(.mailbox(joe), RecipientParameters()))),
        .init("rcpt to:<joe@x.test> ", .success(.rcpt(.mailbox(joe), RecipientParameters()))),
        .init("rcpt to: joe@x.test", .success(.rcpt(.mailbox(joe), RecipientParameters()))),
        .init("RCPT TO:<Postmaster>", .success(.rcpt(.postmaster, RecipientParameters()))),
        .init("RCPT TO:<postMASTER>", .success(.rcpt(.postmaster, RecipientParameters()))),
        .init("RCPT TO:postmaster", .success(.rcpt(.postmaster, RecipientParameters()))),
        .init(
            "RCPT TO:<postmaster@x.test>",
            .success(.rcpt(.mailbox(mailbox("postmaster", "x.test")), RecipientParameters()))),
        .init("RCPT TO:<>", .failure(.badAddress("empty recipient"))),
        .init("RCPT TO:", .failure(.syntax("RCPT TO:<address>"))),
        .init("RCPT", .failure(.syntax("RCPT TO:<address>"))),
        .init("RCPT FROM:<joe@x.test>", .failure(.syntax("RCPT TO:<address>"))),
        .init("RCPT TO:<@relay.test:joe@x.test>", .success(.rcpt(.mailbox(joe), RecipientParameters()))),
        .init("RCPT TO:<a%b@x.test>", .success(.rcpt(.mailbox(mailbox("a%b", "x.test")), RecipientParameters()))),
        .init("RCPT TO:<b!a@x.test>", .success(.rcpt(.mailbox(mailbox("b!a", "x.test")), RecipientParameters()))),
        .init(
            "RCPT TO:<\"a@b\"@x.test>",
            .success(.rcpt(.mailbox(mailbox("a@b", "x.test", quoted: true)), RecipientParameters()))),
        .init(
            "RCPT TO:<\"a>b\"@x.test>",
            .success(.rcpt(.mailbox(mailbox("a>b", "x.test", quoted: true)), RecipientParameters()))),
        .init(
            "RCPT TO:<\"a b\"@x.test> NOTIFY=NEVER",
            .success(.rcpt(.mailbox(mailbox("a b", "x.test", quoted: true)), RecipientParameters(notify: .never)))),
        .init(
            "RCPT TO:\"a b\"@x.test",
            .success(.rcpt(.mailbox(mailbox("a b", "x.test", quoted: true)), RecipientParameters()))),
        // Commands without arguments.
        .init("DATA", .success(.data)),
        .init("data ", .success(.data)),
        .init("DATA x", .failure(.syntax("DATA"))),
        .init("RSET", .success(.rset)),
        .init("RSET now", .failure(.syntax("RSET"))),
        .init("QUIT", .success(.quit)),
        .init("Quit", .success(.quit)),
        .init("QUIT now", .failure(.syntax("QUIT"))),
        .init("STARTTLS", .success(.starttls)),
        .init("STARTTLS x", .failure(.syntax("STARTTLS"))),
        .init("NOOP", .success(.noop)),
        .init("NOOP anything \"at all\"", .success(.noop)),
        // BDAT (RFC 3030).
        .init("BDAT 100", .success(.bdat(size: 100, last: false))),
        .init("BDAT 0 LAST", .success(.bdat(size: 0, last: true))),
        .init("bdat 5 last", .success(.bdat(size: 5, last: true))),
        .init("BDAT", .failure(.syntax("BDAT size [LAST]"))),
        .init("BDAT -1", .failure(.syntax("BDAT size [LAST]"))),
        .init("BDAT 1x", .failure(.syntax("BDAT size [LAST]"))),
        .init("BDAT 10 FIRST", .failure(.syntax("BDAT size [LAST]"))),
        .init("BDAT 10 LAST x", .failure(.syntax("BDAT size [LAST]"))),
        .init("BDAT 99999999999999999999999", .failure(.syntax("BDAT size [LAST]"))),
        // VRFY, EXPN, HELP.
        .init("VRFY joe", .success(.vrfy("joe"))),
        .init("VRFY", .failure(.syntax("VRFY address"))),
        .init("EXPN staff", .success(.expn("staff"))),
        .init("EXPN", .failure(.syntax("EXPN mailing-list"))),
        .init("HELP", .success(.help(nil))),
        .init("HELP MAIL", .success(.help("MAIL"))),
        // AUTH (RFC 4954).
        .init("AUTH PLAIN", .success(.auth(mechanism: "PLAIN", initialResponse: nil))),
        .init("auth plain AGpvZQBzZWNyZXQ=", .success(.auth(mechanism: "PLAIN", initialResponse: "AGpvZQBzZWNyZXQ="))),
        .init("AUTH PLAIN =", .success(.auth(mechanism: "PLAIN", initialResponse: "="))),
        .init("AUTH CRAM-MD5", .success(.auth(mechanism: "CRAM-MD5", initialResponse: nil))),
        .init("AUTH", .failure(.syntax("AUTH mechanism [initial-response]"))),
        .init("AUTH PLAIN a b", .failure(.syntax("AUTH mechanism [initial-response]"))),
        .init("AUTH PLAIN a!b", .failure(.syntax("AUTH mechanism [initial-response]"))),
        .init("AUTH MECHANISMNAMETOOLONGFORSASL", .failure(.syntax("AUTH mechanism [initial-response]"))),
        // Unknown verbs.
        .init("", .failure(.unknownCommand)),
        .init(" EHLO x", .failure(.unknownCommand)),
        .init("FOO", .failure(.unknownCommand)),
        .init("DATAX", .failure(.unknownCommand)),
        .init("MAIL:FROM:<a@b>", .failure(.unknownCommand)),
        .init("GET / HTTP/1.1", .failure(.unknownCommand)),
        // Control characters anywhere.
        .init("EHLO a\0b", .failure(.invalidCharacters)),
        .init("DATA\r", .failure(.invalidCharacters)),
        .init("DATA\n", .failure(.invalidCharacters)),
        .init("MAIL FROM:<a@b>\nRCPT TO:<c@d>", .failure(.invalidCharacters)),
        .init("EHLO\tx", .failure(.invalidCharacters)),
        .init("NOOP \u{7F}", .failure(.invalidCharacters)),
        .init("NOOP \u{1B}[31m", .failure(.invalidCharacters)),
    ]

    @Test(arguments: commands)
    func parses(_ fixture: CommandFixture) {
        #expect(parseLine(fixture.line) == fixture.expected)
    }

    @Test func invalidUTF8IsRejected() {
        for bytes: [UInt8] in [
            [0x45, 0x48, 0x4C, 0x4F, 0x20, 0xFF], Array("RCPT TO:<".utf8) + [0xC3] + Array("@x.test>".utf8),
        ] {
            #expect(throws: SMTPCommandError.invalidCharacters) { try SMTPCommand.parse(ByteBuffer(bytes: bytes)) }
        }
    }

    @Test func utf8MailboxParses() {
        #expect(
            parseLine("RCPT TO:<jörg@bücher.test> ")
                == .success(.rcpt(.mailbox(mailbox("jörg", "bücher.test")), RecipientParameters())))
        #expect(mailbox("jörg", "bücher.test").requiresSMTPUTF8)
    }

    @Test func pathLengthLimit() {
        // 256 octets with brackets is the most (RFC 5321 §4.5.3.1.3).
        let local = String(repeating: "a", count: 64)
        let label = String(repeating: "b", count: 63)
        let fits = local + "@" + [label, label, String(repeating: "c", count: 61)].joined(separator: ".")
        #expect(fits.utf8.count + 2 == 256)
        #expect(throws: Never.self) { try SMTPCommand.parse(ByteBuffer(string: "RCPT TO:<\(fits)>")) }
        #expect(throws: SMTPCommandError.badAddress("path too long")) {
            try SMTPCommand.parse(ByteBuffer(string: "RCPT TO:<\(fits)c>"))
        }
        #expect(throws: SMTPCommandError.badAddress("path too long")) {
            try SMTPCommand.parse(ByteBuffer(string: "MAIL FROM:\(fits)c"))
        }
    }
}

struct ParameterFixture: Sendable, CustomTestStringConvertible {
    var parameters: String
    var expected: Result<MailParameters, SMTPCommandError>
    init(_ parameters: String, _ expected: Result<MailParameters, SMTPCommandError>) {
        self.parameters = parameters
        self.expected = expected
    }
    var testDescription: String { parameters }
}

struct RecipientParameterFixture: Sendable, CustomTestStringConvertible {
    var parameters: String
    var expected: Result<RecipientParameters, SMTPCommandError>
    init(_ parameters: String, _ expected: Result<RecipientParameters, SMTPCommandError>) {
        self.parameters = parameters
        self.expected = expected
    }
    var testDescription: String { parameters }
}

@Suite struct ESMTPParameterTests {
    static let mailFixtures: [ParameterFixture] = [
        .init("SIZE=1000", .success(MailParameters(size: 1000))),
        .init("size=0", .success(MailParameters(size: 0))),
        .init("SIZE=99999999999999999999", .success(MailParameters(size: Int.max))),
        .init("SIZE=999999999999999999999", .failure(.unsupportedParameter("SIZE=999999999999999999999"))),
        .init("SIZE=-1", .failure(.unsupportedParameter("SIZE=-1"))),
        .init("SIZE=1k", .failure(.unsupportedParameter("SIZE=1k"))),
        .init("SIZE", .failure(.unsupportedParameter("SIZE"))),
        .init("SIZE=", .failure(.syntax("MAIL FROM:<address> [parameters]"))),
        .init("SIZE=1 SIZE=2", .failure(.syntax("duplicate parameter SIZE"))),
        .init("SIZE=1 size=2", .failure(.syntax("duplicate parameter SIZE"))),
        .init("BODY=8BITMIME", .success(MailParameters(body: .eightBitMIME))),
        .init("BODY=7bit", .success(MailParameters(body: .sevenBit))),
        .init("BODY=BINARYMIME", .success(MailParameters(body: .binaryMIME))),
        .init("BODY=9BIT", .failure(.unsupportedParameter("BODY=9BIT"))),
        .init("SMTPUTF8", .success(MailParameters(smtpUTF8: true))),
        .init("SMTPUTF8=yes", .failure(.unsupportedParameter("SMTPUTF8=yes"))),
        .init("RET=FULL", .success(MailParameters(ret: .full))),
        .init("RET=hdrs", .success(MailParameters(ret: .headers))),
        .init("RET=BODY", .failure(.unsupportedParameter("RET=BODY"))),
        .init("ENVID=QQ+2B314", .success(MailParameters(envelopeID: "QQ+314"))),
        .init("ENVID=a+0D+0Ab", .failure(.unsupportedParameter("ENVID=a+0D+0Ab"))),
        .init("ENVID=a+2b", .failure(.unsupportedParameter("ENVID=a+2b"))),
        .init("ENVID=a+2", .failure(.unsupportedParameter("ENVID=a+2"))),
        .init(
            "ENVID=" + String(repeating: "x", count: 101),
            .failure(.unsupportedParameter("ENVID=" + String(repeating: "x", count: 101)))),
        .init("AUTH=<>", .success(MailParameters(auth: "<>"))),
        .init("AUTH=joe+40x.test", .success(MailParameters(auth: "joe@x.test"))),
        .init("FOO=bar", .failure(.unsupportedParameter("FOO"))),
        .init("x-custom", .failure(.unsupportedParameter("X-CUSTOM"))),
        .init("NOTIFY=NEVER", .failure(.unsupportedParameter("NOTIFY"))),
        .init("-BAD", .failure(.syntax("MAIL FROM:<address> [parameters]"))),
        .init("SIZE==1", .failure(.syntax("MAIL FROM:<address> [parameters]"))),
        .init(
            "SIZE=100  BODY=8BITMIME   SMTPUTF8 RET=HDRS ENVID=abc AUTH=<>",
            .success(
                MailParameters(
                    size: 100, body: .eightBitMIME, smtpUTF8: true, ret: .headers, envelopeID: "abc", auth: "<>"))),
    ]

    @Test(arguments: mailFixtures)
    func mailParameters(_ fixture: ParameterFixture) {
        let result = parseLine("MAIL FROM:<joe@x.test> " + fixture.parameters)
        switch fixture.expected {
        case .success(let parameters):
            #expect(result == .success(.mail(.mailbox(SMTPCommandParseTests.joe), parameters)))
        case .failure(let error):
            #expect(result == .failure(error))
        }
    }

    static let recipientFixtures: [RecipientParameterFixture] = [
        .init("NOTIFY=NEVER", .success(RecipientParameters(notify: .never))),
        .init("NOTIFY=SUCCESS,FAILURE", .success(RecipientParameters(notify: [.success, .failure]))),
        .init("notify=delay", .success(RecipientParameters(notify: .delay))),
        .init("NOTIFY=NEVER,SUCCESS", .failure(.unsupportedParameter("NOTIFY=NEVER,SUCCESS"))),
        .init("NOTIFY=SUCCESS,", .failure(.unsupportedParameter("NOTIFY=SUCCESS,"))),
        .init("NOTIFY", .failure(.unsupportedParameter("NOTIFY"))),
        .init(
            "ORCPT=rfc822;joe+40x.test",
            .success(
                RecipientParameters(originalRecipient: OriginalRecipient(addressType: "rfc822", address: "joe@x.test")))
        ),
        .init(
            "ORCPT=rfc822;a+2Bb",
            .success(RecipientParameters(originalRecipient: OriginalRecipient(addressType: "rfc822", address: "a+b")))),
        .init("ORCPT=rfc822", .failure(.unsupportedParameter("ORCPT=rfc822"))),
        .init("ORCPT=;a", .failure(.unsupportedParameter("ORCPT=;a"))),
        .init("ORCPT=rfc822;", .failure(.unsupportedParameter("ORCPT=rfc822;"))),
        .init("ORCPT=rfc822;a+0Ab", .failure(.unsupportedParameter("ORCPT=rfc822;a+0Ab"))),
        .init("NOTIFY=NEVER NOTIFY=NEVER", .failure(.syntax("duplicate parameter NOTIFY"))),
        .init("SIZE=10", .failure(.unsupportedParameter("SIZE"))),
        .init(
            "NOTIFY=FAILURE,DELAY ORCPT=rfc822;joe+40x.test",
            .success(
                RecipientParameters(
                    notify: [.failure, .delay],
                    originalRecipient: OriginalRecipient(addressType: "rfc822", address: "joe@x.test")))),
    ]

    @Test(arguments: recipientFixtures)
    func recipientParameters(_ fixture: RecipientParameterFixture) {
        let result = parseLine("RCPT TO:<joe@x.test> " + fixture.parameters)
        switch fixture.expected {
        case .success(let parameters):
            #expect(result == .success(.rcpt(.mailbox(SMTPCommandParseTests.joe), parameters)))
        case .failure(let error):
            #expect(result == .failure(error))
        }
    }
}
