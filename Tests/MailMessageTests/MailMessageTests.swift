import NIOCore
import Testing

@testable import MailMessage

@Suite struct MessageDateTests {
    @Test(arguments: [
        (0, "Thu, 1 Jan 1970 00:00:00 +0000"),
        (1_795_427_200, "Mon, 23 Nov 2026 09:46:40 +0000"),
        (951_782_400, "Tue, 29 Feb 2000 00:00:00 +0000"),
    ])
    func formatsRFC5322(seconds: Int, expected: String) {
        #expect(MessageDate.format(secondsSince1970: seconds) == expected)
    }
}

@Suite struct TraceHeaderTests {
    @Test func receivedNamesClientProtocolAndSingleRecipient() {
        let field = TraceHeaders.received(
            heloName: "client.example", reverseName: "mail.client.example", clientAddress: "192.0.2.1",
            hostname: "mx.example.test", protocol: .esmtp, queueID: "ABC123", recipient: "a@example.test",
            secondsSince1970: 0)
        #expect(
            field == "Received: from client.example (mail.client.example [192.0.2.1])\r\n"
                + "\tby mx.example.test (Tern) with ESMTP id ABC123\r\n\tfor <a@example.test>;\r\n"
                + "\tThu, 1 Jan 1970 00:00:00 +0000\r\n")
    }

    @Test func receivedWithoutReverseNameSaysUnknownAndMarksIPv6() {
        let field = TraceHeaders.received(
            heloName: "x", reverseName: nil, clientAddress: "::1", hostname: "h", protocol: .smtp, queueID: "Q",
            recipient: nil, secondsSince1970: 0)
        #expect(field.hasPrefix("Received: from x (unknown [IPv6:::1])\r\n\tby h (Tern) with SMTP id Q;\r\n"))
    }

    @Test func clientTextCannotBreakTheHeader() {
        let field = TraceHeaders.received(
            heloName: "evil\r\nBcc: x@y (", reverseName: nil, clientAddress: "192.0.2.1", hostname: "h",
            protocol: .esmtp, queueID: "Q", recipient: nil, secondsSince1970: 0)
        #expect(field.contains("from evil??Bcc: x@y ? (unknown"))
        #expect(field.split(separator: "\r\n").count == 3)
        #expect(TraceHeaders.returnPath("a@b\r\nX: y") == "Return-Path: <a@b??X: y>\r\n")
        #expect(TraceHeaders.deliveredTo("a+tag@b") == "Delivered-To: a+tag@b\r\n")
    }
}

@Suite struct HeaderSectionScannerTests {
    static let message =
        "Received: from a\r\n\tby b\r\nreceived: from c\r\nFrom: x@y\r\nMessage-ID: <1@y>\r\nSubject: hi\r\n\r\nReceived: in body\r\n"

    func scan(_ text: String, splits: [Int] = []) -> HeaderSectionScanner {
        var scanner = HeaderSectionScanner()
        let bytes = Array(text.utf8)
        var start = 0
        for split in splits + [bytes.count] where split >= start {
            scanner.scan(ByteBuffer(bytes: bytes[start..<split]))
            start = split
        }
        return scanner
    }

    @Test func countsReceivedAndPresenceInTheHeaderOnly() {
        let scanner = scan(Self.message)
        #expect(scanner.receivedCount == 2)
        #expect(scanner.presence == [.from, .messageID])
        #expect(scanner.headerComplete)
        #expect(scanner.headerSize == Self.message.utf8.count - "Received: in body\r\n".utf8.count)
    }

    @Test func everySplitGivesTheSameResult() {
        let whole = scan(Self.message)
        for split in 0...Self.message.utf8.count {
            let parts = scan(Self.message, splits: [split])
            #expect(parts.receivedCount == whole.receivedCount)
            #expect(parts.headerSize == whole.headerSize)
            #expect(parts.presence == whole.presence)
        }
    }

    @Test func aLineThatIsNoFieldEndsTheHeader() {
        let scanner = scan("Subject: x\r\nthis is body text\r\nReceived: no\r\n")
        #expect(scanner.headerComplete)
        #expect(scanner.receivedCount == 0)
        #expect(scanner.headerSize < 20)
    }

    @Test func headerlessMessageIsNotAHugeHeader() {
        let scanner = scan(String(repeating: "plain text line\r\n", count: 10_000))
        #expect(scanner.headerComplete)
        #expect(scanner.headerSize < 100)
    }
}

@Suite struct AddressListTests {
    @Test(arguments: [
        ("a@example.test", ["a@example.test"]),
        ("A <a@x.test>, \"Doe, John\" <j@y.test>", ["a@x.test", "j@y.test"]),
        ("a@x.test (comment, with comma), b@y.test", ["a@x.test", "b@y.test"]),
        ("friends: a@x.test, b@y.test;, c@z.test", ["a@x.test", "b@y.test", "c@z.test"]),
        ("undisclosed-recipients:;", []),
        ("", []),
    ])
    func extractsAddresses(value: String, expected: [String]) {
        #expect(AddressList.addresses(in: value) == expected)
    }
}
