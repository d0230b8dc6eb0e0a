import NIOCore
import Testing

@testable import SMTPProtocol

/// Replies parsed from `input`, fed in pieces of `chunk` octets; the error if one came.
private func replies(_ input: String, chunk: Int = .max) -> ([SMTPReply], SMTPReplyError?) {
    var parser = SMTPReplyParser(maxLineLength: 100)
    var result: [SMTPReply] = []
    let bytes = Array(input.utf8)
    var offset = 0
    repeat {
        let end = min(bytes.count, offset + chunk)
        parser.append(ByteBuffer(bytes: bytes[offset..<end]))
        offset = end
        do throws(SMTPReplyError) {
            while let reply = try parser.nextReply() { result.append(reply) }
        } catch {
            return (result, error)
        }
    } while offset < bytes.count
    return (result, nil)
}

@Suite struct SMTPReplyParserTests {
    @Test(
        arguments: [
            // (input, code, enhanced, lines)
            ("220 mx.example.test ESMTP ready\r\n", 220, nil, ["mx.example.test ESMTP ready"]),
            ("250 2.1.0 Ok\r\n", 250, "2.1.0", ["Ok"]),
            ("250\r\n", 250, nil, [""]),
            ("250 \r\n", 250, nil, [""]),
            (
                "550-5.7.1 Relaying\r\n550-5.7.1 denied\r\n550 5.7.1 here\r\n", 550, "5.7.1",
                ["Relaying", "denied", "here"]
            ),
            ("451 4.3.0 Try later\r\n", 451, "4.3.0", ["Try later"]),
            // An enhanced code of the wrong class is text, not a status (RFC 3463 §2).
            ("250 5.1.1 odd\r\n", 250, nil, ["5.1.1 odd"]),
            ("554 5.7.1\r\n", 554, "5.7.1", [""]),
            ("250 2.0.01 no\r\n", 250, "2.0.1", ["no"]),  // RFC 3463: 1*3digit
            ("250 2.0.1234 no\r\n", 250, nil, ["2.0.1234 no"]),
            // Continuation lines without the enhanced code keep their text.
            (
                "250-mx.example.test\r\n250-PIPELINING\r\n250 SIZE 1000\r\n", 250, nil,
                ["mx.example.test", "PIPELINING", "SIZE 1000"]
            ),
            ("421 4.4.2 mx closing: timeout\r\n", 421, "4.4.2", ["mx closing: timeout"]),
            // A broken server's bare LF still ends its lines.
            ("250-one\n250 two\n", 250, nil, ["one", "two"]),
        ] as [(String, Int, String?, [String])])
    func parses(input: String, code: Int, enhanced: String?, lines: [String]) {
        for chunk in [1, 2, 3, 7, Int.max] {
            let (parsed, error) = replies(input, chunk: chunk)
            #expect(error == nil)
            #expect(parsed.count == 1)
            #expect(parsed.first?.code == code)
            #expect(parsed.first?.enhanced?.description == enhanced)
            #expect(parsed.first?.lines == lines)
        }
    }

    @Test func severalRepliesInOneRead() {
        let (parsed, error) = replies("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n")
        #expect(error == nil)
        #expect(parsed.map(\.code) == [250, 250, 354])
        #expect(parsed.map { $0.enhanced?.description } == ["2.1.0", "2.1.5", nil])
    }

    @Test(arguments: [
        ("hello\r\n", SMTPReplyError.malformedLine("hello")),
        ("25 short\r\n", .malformedLine("25 short")),
        ("2500 four digits\r\n", .malformedLine("2500 four digits")),
        ("650 six\r\n", .malformedLine("650 six")),
        ("260 x\r\n", .malformedLine("260 x")),
        ("250_x\r\n", .malformedLine("250_x")),
        ("250-first\r\n251 second\r\n", .codeChanged(expected: 250, got: 251)),
        ("250 " + String(repeating: "x", count: 200) + "\r\n", .lineTooLong),
    ])
    func refuses(input: String, expected: SMTPReplyError) {
        #expect(replies(input).1 == expected)
    }

    @Test func boundsTheLinesOfOneReply() {
        let input = String(repeating: "250-x\r\n", count: SMTPReplyParser.maximumLines + 1) + "250 end\r\n"
        #expect(replies(input).1 == .tooManyLines)
    }

    @Test func anIncompleteReplyWaits() {
        let (parsed, error) = replies("250-first\r\n250-second\r\n250 thi")
        #expect(parsed.isEmpty && error == nil)
    }

    @Test func ehloCapabilities() {
        let (parsed, _) = replies(
            "250-mx.example.test greets client.example\r\n250-PIPELINING\r\n250-SIZE 35882577\r\n"
                + "250-8BITMIME\r\n250-auth plain LOGIN\r\n250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250-SMTPUTF8\r\n"
                + "250 STARTTLS\r\n")
        let capabilities = SMTPServerCapabilities(ehloReply: parsed[0])
        #expect(capabilities.pipelining && capabilities.eightBitMIME && capabilities.smtpUTF8)
        #expect(capabilities.startTLS && capabilities.dsn && capabilities.enhancedStatusCodes)
        #expect(!capabilities.chunking && !capabilities.requireTLS)
        #expect(capabilities.maximumSize == 35_882_577)
        #expect(capabilities.authMechanisms == ["PLAIN", "LOGIN"])
        // The greeting line is not a keyword.
        #expect(!capabilities.offers("MX.EXAMPLE.TEST"))
    }

    @Test(
        arguments: [
            ("250-h\r\n250 SIZE\r\n", nil),
            ("250-h\r\n250 SIZE 0\r\n", nil),
            ("250-h\r\n250 SIZE junk\r\n", nil),
            ("250 h\r\n", nil),
            ("250-h\r\n250 SIZE 1000\r\n", 1000),
        ] as [(String, Int?)])
    func sizeLimit(input: String, size: Int?) {
        let (parsed, _) = replies(input)
        #expect(SMTPServerCapabilities(ehloReply: parsed[0]).maximumSize == size)
    }
}
