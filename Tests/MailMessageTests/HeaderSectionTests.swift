import NIOCore
import Testing

@testable import MailMessage

@Suite struct HeaderSectionTests {
    static let message = ByteBuffer(
        string:
            "Received: from x\r\n\tby y; Mon, 1 Jan 2026 00:00:00 +0000\r\n"
            + "Authentication-Results: mx.example.test; spf=pass\r\n"
            + "Subject: Hello\r\n   world\r\n"
            + "From: a@example.net\r\n"
            + "\r\n"
            + "Body line\r\n")

    @Test func splitsFieldsAndFindsTheBody() throws {
        let section = try #require(HeaderSection(parsing: Self.message, isWholeMessage: true))
        #expect(section.fields.map(\.name) == ["Received", "Authentication-Results", "Subject", "From"])
        #expect(section.namesAndValues[2].value == "Hello   world")
        #expect(section.length == Self.message.readableBytes - "Body line\r\n".utf8.count)
    }

    @Test func rewritesTheSection() throws {
        let section = try #require(HeaderSection(parsing: Self.message, isWholeMessage: true))
        let header = section.rewritten(
            adding: ["Authentication-Results: mx.example.test; dkim=none", "X-Spam: yes"], subjectPrefix: "[SPAM] ",
            keeping: { !$0.hasName("authentication-results") }, from: Self.message)
        #expect(
            String(buffer: header)
                == "Authentication-Results: mx.example.test; dkim=none\r\nX-Spam: yes\r\n"
                + "Received: from x\r\n\tby y; Mon, 1 Jan 2026 00:00:00 +0000\r\n"
                + "Subject: [SPAM] Hello\r\n   world\r\n"
                + "From: a@example.net\r\n\r\n")
    }

    @Test func aMissingSubjectIsAdded() throws {
        let message = ByteBuffer(string: "From: a@b\r\n\r\nx")
        let section = try #require(HeaderSection(parsing: message, isWholeMessage: true))
        #expect(
            String(buffer: section.rewritten(adding: [], subjectPrefix: "[SPAM] ", from: message))
                == "From: a@b\r\nSubject: [SPAM]\r\n\r\n")
    }

    @Test func headerOnlyMessage() throws {
        let message = ByteBuffer(string: "From: a@b\r\nSubject: x\r\n")
        let section = try #require(HeaderSection(parsing: message, isWholeMessage: true))
        #expect(section.fields.count == 2 && section.length == message.readableBytes)
        #expect(HeaderSection(parsing: message, isWholeMessage: false) == nil)
    }
}
