import NIOCore
import Testing

@testable import SMTPProtocol

struct MailboxFixture: Sendable, CustomTestStringConvertible {
    var text: String
    var expected: Result<Mailbox, SMTPCommandError>
    init(_ text: String, _ expected: Result<Mailbox, SMTPCommandError>) {
        self.text = text
        self.expected = expected
    }
    var testDescription: String { text.debugDescription }
}

@Suite struct AddressParseTests {
    static func ok(_ local: String, _ domain: MailDomain, quoted: Bool = false) -> Result<Mailbox, SMTPCommandError> {
        .success(Mailbox(localPart: local, domain: domain, localPartWasQuoted: quoted))
    }

    static func bad(_ reason: String) -> Result<Mailbox, SMTPCommandError> { .failure(.badAddress(reason)) }

    static let fixtures: [MailboxFixture] = [
        .init("joe@x.test", ok("joe", .name("x.test"))),
        .init("Joe.Smith@Example.TEST", ok("Joe.Smith", .name("Example.TEST"))),
        .init("a+tag@x-y.test", ok("a+tag", .name("x-y.test"))),
        .init("!#$%&'*+-/=?^_`{|}~@x.test", ok("!#$%&'*+-/=?^_`{|}~", .name("x.test"))),
        // `%` and `!` paths are valid syntax; relay control judges them.
        .init("user%other.test@x.test", ok("user%other.test", .name("x.test"))),
        .init("other.test!user@x.test", ok("other.test!user", .name("x.test"))),
        .init("joe@localhost", ok("joe", .name("localhost"))),
        .init("joe@1.2.3.4", ok("joe", .name("1.2.3.4"))),
        // Quoted local parts.
        .init("\"joe\"@x.test", ok("joe", .name("x.test"), quoted: true)),
        .init("\"a b\"@x.test", ok("a b", .name("x.test"), quoted: true)),
        .init("\"a@b\"@x.test", ok("a@b", .name("x.test"), quoted: true)),
        .init("\"a%b!c\"@x.test", ok("a%b!c", .name("x.test"), quoted: true)),
        .init("\"a\\\"b\\\\c\"@x.test", ok("a\"b\\c", .name("x.test"), quoted: true)),
        .init("\"\"@x.test", ok("", .name("x.test"), quoted: true)),
        .init("\"a\"b@x.test", bad("missing @ after quoted local part")),
        .init("\"ab@x.test", bad("unterminated quoted local part")),
        .init("\"a\\", bad("invalid quoted pair")),
        // Dot-string errors.
        .init(".joe@x.test", bad("invalid local part")),
        .init("joe.@x.test", bad("invalid local part")),
        .init("jo..e@x.test", bad("invalid local part")),
        .init("jo e@x.test", bad("invalid local part")),
        .init("jo(e)@x.test", bad("invalid local part")),
        .init("@x.test", bad("invalid local part")),
        .init("joe", bad("missing @domain")),
        .init("", bad("empty address")),
        // Domains.
        .init("joe@", bad("empty domain")),
        .init("joe@x.test.", bad("trailing dot in domain")),
        .init("joe@.x.test", bad("empty label in domain")),
        .init("joe@x..test", bad("empty label in domain")),
        .init("joe@-x.test", bad("hyphen at the edge of a domain label")),
        .init("joe@x-.test", bad("hyphen at the edge of a domain label")),
        .init("joe@x_y.test", bad("invalid character in domain")),
        .init("joe@x.test@y.test", bad("invalid character in domain")),
        .init("joe@" + String(repeating: "a", count: 64) + ".test", bad("domain label too long")),
        // U-labels (RFC 6531).
        .init("jörg@bücher.test", ok("jörg", .name("bücher.test"))),
        .init("用户@例子.测试", ok("用户", .name("例子.测试"))),
        // IPv4 literals.
        .init("joe@[192.0.2.1]", ok("joe", .ipv4Literal("192.0.2.1"))),
        .init("joe@[0.0.0.0]", ok("joe", .ipv4Literal("0.0.0.0"))),
        .init("joe@[255.255.255.255]", ok("joe", .ipv4Literal("255.255.255.255"))),
        .init("joe@[127.000.0.01]", ok("joe", .ipv4Literal("127.0.0.1"))),
        .init("joe@[256.0.0.1]", bad("invalid IPv4 address literal")),
        .init("joe@[1.2.3]", bad("invalid IPv4 address literal")),
        .init("joe@[1.2.3.4.5]", bad("invalid IPv4 address literal")),
        .init("joe@[1.2.3.]", bad("invalid IPv4 address literal")),
        .init("joe@[1.2.3.0001]", bad("invalid IPv4 address literal")),
        .init("joe@[]", bad("unterminated address literal")),
        .init("joe@[1.2.3.4", bad("unterminated address literal")),
        .init("joe@[1.2.3.4]x", bad("unterminated address literal")),
        // IPv6 literals: full, compressed, IPv4-embedded.
        .init("joe@[IPv6:2001:db8:0:0:0:0:0:1]", ok("joe", .ipv6Literal("2001:db8:0:0:0:0:0:1"))),
        .init("joe@[ipv6:2001:DB8::1]", ok("joe", .ipv6Literal("2001:DB8::1"))),
        .init("joe@[IPv6:::1]", ok("joe", .ipv6Literal("::1"))),
        .init("joe@[IPv6:::]", ok("joe", .ipv6Literal("::"))),
        .init("joe@[IPv6:fe80::]", ok("joe", .ipv6Literal("fe80::"))),
        .init("joe@[IPv6:1:2:3::4:5:6]", ok("joe", .ipv6Literal("1:2:3::4:5:6"))),
        .init("joe@[IPv6:::ffff:192.0.2.1]", ok("joe", .ipv6Literal("::ffff:192.0.2.1"))),
        .init("joe@[IPv6:1:2:3:4:5:6:192.0.2.1]", ok("joe", .ipv6Literal("1:2:3:4:5:6:192.0.2.1"))),
        .init("joe@[IPv6:1:2::3:4:192.0.2.1]", ok("joe", .ipv6Literal("1:2::3:4:192.0.2.1"))),
        .init("joe@[IPv6:1:2:3:4:5:6:7]", bad("invalid IPv6 address literal")),
        .init("joe@[IPv6:1:2:3:4:5:6:7:8:9]", bad("invalid IPv6 address literal")),
        .init("joe@[IPv6:1:2:3:4::5:6:7]", bad("invalid IPv6 address literal")),
        .init("joe@[IPv6:1::2::3]", bad("invalid IPv6 address literal")),
        .init("joe@[IPv6:12345::1]", bad("invalid IPv6 address literal")),
        .init("joe@[IPv6:g::1]", bad("invalid IPv6 address literal")),
        .init("joe@[IPv6::1]", bad("invalid IPv6 address literal")),
        .init("joe@[IPv6:1:::2]", bad("invalid IPv6 address literal")),
        .init("joe@[IPv6:]", bad("invalid IPv6 address literal")),
        .init("joe@[IPv6:1.2.3.4::]", bad("invalid IPv6 address literal")),
        .init("joe@[IPv6:::1.2.3.256]", bad("invalid IPv6 address literal")),
        .init("joe@[IPv6:1:2:3:4:5:192.0.2.1]", bad("invalid IPv6 address literal")),
        .init("joe@[IPv6:1:2:3:4:5::192.0.2.1]", bad("invalid IPv6 address literal")),
        // General-address-literal.
        .init("joe@[x-tag:some-content]", ok("joe", .generalLiteral(tag: "x-tag", content: "some-content"))),
        .init("joe@[tag-:x]", bad("invalid address literal")),
        .init("joe@[tag:]", bad("invalid address literal")),
        .init("joe@[tag:a[b]", bad("invalid address literal")),
    ]

    @Test(arguments: fixtures)
    func parsesMailbox(_ fixture: MailboxFixture) {
        let result = Result { () throws(SMTPCommandError) in try Mailbox.parse(fixture.text) }
        #expect(result == fixture.expected)
    }

    @Test func localPartAndDomainLengthLimits() throws {
        let local64 = String(repeating: "a", count: 64)
        #expect(try Mailbox.parse(local64 + "@x.test").localPart == local64)
        #expect(throws: SMTPCommandError.badAddress("local part too long")) { try Mailbox.parse(local64 + "a@x.test") }
        let label = String(repeating: "b", count: 63)
        let domain255 = [label, label, label, String(repeating: "c", count: 63)].joined(separator: ".")
        #expect(domain255.utf8.count == 255)
        #expect(throws: Never.self) { try MailDomain.parse(domain255) }
        #expect(throws: SMTPCommandError.badAddress("domain too long")) { try MailDomain.parse(domain255 + "d") }
    }

    @Test func sourceRoutesAreDiscarded() {
        for route in ["@a.test:joe@x.test", "@a.test,@b.test:joe@x.test"] {
            #expect(
                parseLine("RCPT TO:<\(route)>")
                    == .success(.rcpt(.mailbox(SMTPCommandParseTests.joe), RecipientParameters())))
        }
        for route in [
            "@a.test joe@x.test", "@:joe@x.test", "@a.test,b.test:joe@x.test", "@a.test.:joe@x.test",
            "@[1.2.3.4]:joe@x.test",
        ] {
            guard case .failure(.badAddress) = parseLine("RCPT TO:<\(route)>") else {
                Issue.record("accepted \(route)")
                continue
            }
        }
    }

    @Test func mailboxDescriptionRoundTrips() throws {
        for text in ["joe@x.test", "\"a b\"@x.test", "\"a\\\"b\"@[IPv6:::1]", "jörg@bücher.test", "x@[192.0.2.1]"] {
            let mailbox = try Mailbox.parse(text)
            #expect(try Mailbox.parse(mailbox.description) == mailbox)
        }
    }
}

@Suite struct SMTPReplyEncodingTests {
    static func encoded(_ reply: SMTPReply) -> String {
        var buffer = ByteBuffer()
        reply.write(to: &buffer)
        return String(decoding: buffer.readableBytesView, as: UTF8.self)
    }

    @Test func singleAndMultiLine() {
        #expect(Self.encoded(SMTPReply(250, EnhancedStatusCode(2, 0, 0), "Ok")) == "250 2.0.0 Ok\r\n")
        #expect(Self.encoded(SMTPReply(220, nil, "mx ESMTP")) == "220 mx ESMTP\r\n")
        #expect(
            Self.encoded(SMTPReply(250, nil, lines: ["mx", "PIPELINING", "SIZE 10"]))
                == "250-mx\r\n250-PIPELINING\r\n250 SIZE 10\r\n")
    }

    @Test func lineBreaksCannotInjectReplies() {
        #expect(Self.encoded(SMTPReply(550, EnhancedStatusCode(5, 1, 1), "no\r\n250 ok")) == "550 5.1.1 no  250 ok\r\n")
    }

    @Test func errorsKnowTheirReplies() {
        #expect(SMTPCommandError.unknownCommand.reply.code == 500)
        #expect(SMTPCommandError.syntax("x").reply.code == 501)
        #expect(SMTPCommandError.badAddress("x").reply.enhanced == EnhancedStatusCode(5, 1, 3))
        #expect(SMTPCommandError.unsupportedParameter("X").reply.code == 555)
        #expect(SMTPCommandError.invalidCharacters.reply.code == 500)
    }
}
