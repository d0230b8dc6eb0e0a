import Foundation
import MailMessage
import NIOCore
import Testing

/// A rendered report read back as a mail reader would: fields unfolded, the body cut at the
/// boundary, the delivery-status part cut into its blocks of fields.
struct ParsedReport {
    /// A header section (fields unfolded, in order) and what follows its empty line.
    struct Entity {
        var fields: [(name: String, value: String)] = []
        var body = ""

        init(_ text: String) {
            var head = text
            if let end = text.range(of: "\r\n\r\n") {
                head = String(text[..<end.lowerBound])
                body = String(text[end.upperBound...])
            }
            for line in head.components(separatedBy: "\r\n") where !line.isEmpty {
                if line.hasPrefix(" ") || line.hasPrefix("\t"), !fields.isEmpty {
                    fields[fields.count - 1].value += line
                } else if let colon = line.firstIndex(of: ":") {
                    let value = line[line.index(after: colon)...].drop { $0 == " " }
                    fields.append((String(line[..<colon]), String(value)))
                } else {
                    fields.append((line, ""))
                }
            }
        }

        var names: [String] { fields.map(\.name) }
        subscript(name: String) -> String? { fields.first { $0.name == name }?.value }
    }

    var header: Entity
    var boundary: String
    var parts: [Entity]

    init(_ data: ByteBuffer) throws {
        header = Entity(String(buffer: data))
        let contentType = try #require(header["Content-Type"])
        let start = try #require(contentType.range(of: "boundary=\""))
        boundary = String(contentType[start.upperBound...].prefix { $0 != "\"" })
        let pieces = header.body.components(separatedBy: "\r\n--\(boundary)")
        try #require(pieces.count == 5)
        #expect(pieces.last == "--\r\n")
        // Each piece starts with the CRLF that ends its delimiter line: one Character in Swift.
        parts = pieces.dropFirst().dropLast().map { Entity(String($0.dropFirst())) }
    }

    var explanation: Entity { parts[0] }
    var returned: Entity { parts[2] }

    /// The per-message block, then one block per recipient (RFC 3464 §2.1).
    var statusBlocks: [Entity] {
        parts[1].body.components(separatedBy: "\r\n\r\n").map(Entity.init)
    }
}

@Suite struct DeliveryStatusReportTests {
    static let arrival = Date(timeIntervalSince1970: 1_795_427_200)
    static let arrivalText = "Mon, 23 Nov 2026 09:46:40 +0000"
    static let original =
        "Received: from client.example\r\n\tby mx.example.test\r\nFrom: Alice <alice@example.test>\r\n"
        + "To: bob@example.net\r\nSubject: Hello\r\nMessage-ID: <1@example.test>\r\n\r\nHi Bob,\r\nsee you.\r\n"

    static let bob = DeliveryStatusReport.Recipient(
        finalRecipient: "bob@example.net", action: .failed, status: "5.1.1", remoteMTA: "mx1.example.net",
        diagnostic: "550 5.1.1 <bob@example.net>: user unknown", diagnosticIsSMTPReply: true,
        lastAttempt: arrival + 60)

    static func failure(
        _ recipients: [DeliveryStatusReport.Recipient] = [bob], envelopeID: String? = nil,
        sender: String = "alice@example.test"
    ) -> DeliveryStatusReport {
        DeliveryStatusReport(
            kind: .failure, reportingMTA: "mx.example.test", envelopeID: envelopeID, arrivalDate: arrival,
            originalSender: sender, recipients: recipients)
    }

    static func render(
        _ report: DeliveryStatusReport, original: String = original, includeBody: Bool = true
    ) -> DeliveryStatusReport.Rendered {
        report.render(
            messageID: "20261123094740.ABC123@mx.example.test", date: arrival + 3600,
            original: ByteBuffer(string: original), includeBody: includeBody)
    }

    /// The raw lines of the delivery-status part's field `name`: its first line and continuations.
    static func rawLines(of name: String, in rendered: DeliveryStatusReport.Rendered) -> [String] {
        let lines = String(buffer: rendered.data).components(separatedBy: "\r\n")
        guard let first = lines.firstIndex(where: { $0.hasPrefix("\(name):") }) else { return [] }
        let continuations = lines[(first + 1)...].prefix { $0.hasPrefix(" ") }
        return [lines[first]] + continuations
    }

    @Test func failureIsAMultipartReportFromTheMailerDaemon() throws {
        let rendered = Self.render(Self.failure())
        let report = try ParsedReport(rendered.data)
        #expect(
            report.header.names == [
                "From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "MIME-Version", "Content-Type",
                "Content-Transfer-Encoding",
            ])
        #expect(report.header["From"] == "Mail Delivery System <MAILER-DAEMON@mx.example.test>")
        #expect(report.header["To"] == "<alice@example.test>")
        #expect(report.header["Subject"] == "Undelivered Mail Returned to Sender")
        #expect(report.header["Date"] == "Mon, 23 Nov 2026 10:46:40 +0000")
        #expect(report.header["Message-ID"] == "<20261123094740.ABC123@mx.example.test>")
        #expect(report.header["Auto-Submitted"] == "auto-replied")
        #expect(report.header["MIME-Version"] == "1.0")
        #expect(
            report.header["Content-Type"]
                == "multipart/report; report-type=delivery-status; boundary=\"\(report.boundary)\"")
        #expect(
            report.parts.map { $0["Content-Type"] } == [
                "text/plain; charset=us-ascii", "message/delivery-status", "message/rfc822",
            ])
        #expect(report.parts.map { $0["Content-Transfer-Encoding"] } == ["7bit", "7bit", "7bit"])
        #expect(report.returned.body == Self.original)
        #expect(!rendered.eightBit)
    }

    @Test func failureFieldsFollowRFC3464() throws {
        let blocks = try ParsedReport(Self.render(Self.failure()).data).statusBlocks
        #expect(blocks.count == 2)
        #expect(blocks[0].names == ["Reporting-MTA", "Arrival-Date"])
        #expect(blocks[0]["Reporting-MTA"] == "dns; mx.example.test")
        #expect(blocks[0]["Arrival-Date"] == Self.arrivalText)
        #expect(
            blocks[1].names == [
                "Final-Recipient", "Action", "Status", "Remote-MTA", "Diagnostic-Code", "Last-Attempt-Date",
            ])
        #expect(blocks[1]["Final-Recipient"] == "rfc822; bob@example.net")
        #expect(blocks[1]["Action"] == "failed")
        #expect(blocks[1]["Status"] == "5.1.1")
        #expect(blocks[1]["Remote-MTA"] == "dns; mx1.example.net")
        #expect(blocks[1]["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@example.net>: user unknown")
        #expect(blocks[1]["Last-Attempt-Date"] == "Mon, 23 Nov 2026 09:47:40 +0000")
    }

    @Test func explanationQuotesTheServer() throws {
        let body = try ParsedReport(Self.render(Self.failure()).data).explanation.body
        #expect(body.hasPrefix("This is the mail system at host mx.example.test.\r\n"))
        #expect(
            body.contains("\r\n<bob@example.net>: host mx1.example.net said: 550 5.1.1 <bob@example.net>:\r\n    user"))
        let text = body.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(text.contains("your message could not be delivered to one or more recipients. It is attached below."))
        #expect(
            text.hasSuffix("<bob@example.net>: host mx1.example.net said: 550 5.1.1 <bob@example.net>: user unknown"))
    }

    @Test func delayWarningSaysUntilWhen() throws {
        let until = Self.arrival + 5 * 86_400
        let report = DeliveryStatusReport(
            kind: .delay, reportingMTA: "mx.example.test", arrivalDate: Self.arrival,
            originalSender: "alice@example.test",
            recipients: [
                .init(
                    finalRecipient: "carol@example.org", action: .delayed, status: "4.4.1",
                    diagnostic: "connect to mx1.example.org[192.0.2.1]:25: connection refused",
                    lastAttempt: Self.arrival + 3600, willRetryUntil: until)
            ])
        let parsed = try ParsedReport(Self.render(report, includeBody: false).data)
        #expect(parsed.header["Subject"] == "Delayed Mail (still being retried)")
        let fields = parsed.statusBlocks[1]
        #expect(
            fields.names == [
                "Final-Recipient", "Action", "Status", "Diagnostic-Code", "Last-Attempt-Date", "Will-Retry-Until",
            ])
        #expect(fields["Action"] == "delayed")
        #expect(fields["Status"] == "4.4.1")
        #expect(fields["Diagnostic-Code"] == "X-Tern; connect to mx1.example.org[192.0.2.1]:25: connection refused")
        #expect(fields["Will-Retry-Until"] == "Sat, 28 Nov 2026 09:46:40 +0000")
        let text = parsed.explanation.body.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(text.contains("still being retried until Sat, 28 Nov 2026 09:46:40 +0000."))
        #expect(text.contains("<carol@example.org>: connect to mx1.example.org[192.0.2.1]:25: connection refused"))
        #expect(parsed.parts[2]["Content-Type"] == "text/rfc822-headers")
    }

    @Test func willRetryUntilOnlyInDelayReports() throws {
        var recipient = Self.bob
        recipient.willRetryUntil = Self.arrival + 86_400
        let fields = try ParsedReport(Self.render(Self.failure([recipient])).data).statusBlocks[1]
        #expect(fields["Will-Retry-Until"] == nil)
    }

    @Test func onlyTheGivenRecipientsAreListed() throws {
        let dave = DeliveryStatusReport.Recipient(
            finalRecipient: "dave@example.org", action: .failed, status: "5.4.4",
            diagnostic: "no route to example.org")
        let parsed = try ParsedReport(Self.render(Self.failure([Self.bob, dave])).data)
        #expect(
            parsed.statusBlocks.map { $0["Final-Recipient"] } == [
                nil, "rfc822; bob@example.net", "rfc822; dave@example.org",
            ])
        #expect(parsed.statusBlocks[2].names == ["Final-Recipient", "Action", "Status", "Diagnostic-Code"])
        #expect(parsed.explanation.body.contains("<dave@example.org>: no route to example.org\r\n"))
    }

    @Test(
        arguments: [
            (nil, nil), ("QQ314159", nil), (nil, "rfc822;bob@example.net"), ("QQ314159", "rfc822;Bob@Example.NET"),
        ] as [(String?, String?)])
    func envelopeIDAndOriginalRecipientOnlyWhenGiven(envelopeID: String?, originalRecipient: String?) throws {
        var recipient = Self.bob
        recipient.originalRecipient = originalRecipient
        let blocks = try ParsedReport(Self.render(Self.failure([recipient], envelopeID: envelopeID)).data).statusBlocks
        #expect(blocks[0]["Original-Envelope-Id"] == envelopeID)
        #expect(blocks[0].names.contains("Original-Envelope-Id") == (envelopeID != nil))
        #expect(blocks[1]["Original-Recipient"] == originalRecipient)
        #expect(blocks[1].names.first == (originalRecipient == nil ? "Final-Recipient" : "Original-Recipient"))
    }

    @Test(arguments: [
        ("A: 1\r\nB: 2\r\n\r\nbody\r\n", "A: 1\r\nB: 2\r\n\r\n"),
        ("A: 1\nB: 2\n\nbody\n", "A: 1\r\nB: 2\r\n\r\n"),
        ("A: 1\r\n\tfolded\r\n\r\n\r\nbody\r\n", "A: 1\r\n\tfolded\r\n\r\n"),
        ("A: 1\r\nB: 2\r\n", "A: 1\r\nB: 2\r\n"),
        ("A: 1\r\nB: 2", "A: 1\r\nB: 2\r\n"),
        ("\r\nbody only\r\n", "\r\n"),
    ])
    func headerSectionOnlyStopsAtTheEmptyLine(original: String, expected: String) throws {
        let parsed = try ParsedReport(Self.render(Self.failure(), original: original, includeBody: false).data)
        #expect(parsed.returned["Content-Type"] == "text/rfc822-headers")
        #expect(parsed.returned.body == expected)
    }

    @Test(arguments: [
        ("A: 1\nB: 2\n\nbody\nmore", "A: 1\r\nB: 2\r\n\r\nbody\r\nmore\r\n"),
        ("A: 1\rB: 2\r\n\r\nbody\r\n", "A: 1\r\nB: 2\r\n\r\nbody\r\n"),
        ("", ""),
    ])
    func originalLineEndsBecomeCRLF(original: String, expected: String) throws {
        let parsed = try ParsedReport(Self.render(Self.failure(), original: original).data)
        #expect(parsed.returned.body == expected)
    }

    enum Fixture: String, CaseIterable, Sendable {
        case plain, longWordDiagnostic, longOriginalLines, bareLineEnds, longNonASCIIAddress

        var rendered: DeliveryStatusReport.Rendered {
            var recipient = DeliveryStatusReportTests.bob
            var original = DeliveryStatusReportTests.original
            switch self {
            case .plain: break
            case .longWordDiagnostic: recipient.diagnostic = "550 " + String(repeating: "x", count: 2500)
            case .longOriginalLines:
                original =
                    "Subject: " + String(repeating: "é", count: 1500) + "\r\n\r\n" + String(repeating: "y", count: 3000)
            case .bareLineEnds: original = "Subject: a\nX: b\r\rbody\n\n.\n"
            case .longNonASCIIAddress: recipient.finalRecipient = String(repeating: "ü", count: 600) + "@example.net"
            }
            return DeliveryStatusReportTests.render(DeliveryStatusReportTests.failure([recipient]), original: original)
        }
    }

    /// RFC 5321 §4.5.3.1.6 and RFC 5322 §2.1.1: CRLF only, at most 998 octets before it.
    @Test(arguments: Fixture.allCases)
    func everyLineEndsInCRLFWithin998Octets(fixture: Fixture) throws {
        let rendered = fixture.rendered
        let bytes = Array(rendered.data.readableBytesView)
        for index in bytes.indices {
            if bytes[index] == UInt8(ascii: "\n") { #expect(index > 0 && bytes[index - 1] == UInt8(ascii: "\r")) }
            if bytes[index] == UInt8(ascii: "\r") {
                #expect(index + 1 < bytes.count && bytes[index + 1] == UInt8(ascii: "\n"))
            }
        }
        #expect(bytes.suffix(2) == [UInt8(ascii: "\r"), UInt8(ascii: "\n")])
        for line in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            #expect(line.count <= 999)  // with its CR
        }
        // Cutting never splits a UTF-8 sequence.
        #expect(String(decoding: bytes, as: UTF8.self).utf8.elementsEqual(bytes))
        #expect(try ParsedReport(rendered.data).parts.count == 3)
    }

    @Test func longDiagnosticIsFoldedAtSpaces() throws {
        var recipient = Self.bob
        let diagnostic = "550 5.7.1 " + (1...30).map { "word\($0)" }.joined(separator: " ")
        recipient.diagnostic = diagnostic
        let rendered = Self.render(Self.failure([recipient]))
        let lines = Self.rawLines(of: "Diagnostic-Code", in: rendered)
        #expect(lines.count > 2)
        #expect(lines.allSatisfy { $0.utf8.count <= 78 })
        #expect(lines.joined() == "Diagnostic-Code: smtp; \(diagnostic)")
    }

    @Test func multiLineReplyIsUnfoldedIntoOneValue() throws {
        var recipient = Self.bob
        recipient.diagnostic =
            "550-5.1.1 The email account that you tried to reach\n550-5.1.1 does not exist.\r\n550 5.1.1 Try again"
        let fields = try ParsedReport(Self.render(Self.failure([recipient])).data).statusBlocks[1]
        #expect(
            fields["Diagnostic-Code"]
                == "smtp; 550-5.1.1 The email account that you tried to reach 550-5.1.1 does not exist. 550 5.1.1 Try again"
        )
    }

    @Test func lineBreaksInInputsCannotAddFields() throws {
        let recipient = DeliveryStatusReport.Recipient(
            finalRecipient: "bob@example.net\nStatus: 2.0.0", originalRecipient: "rfc822;bob@example.net\r\nX-A: 1",
            action: .failed, status: "5.1.1", remoteMTA: "mx1.example.net\r\nX-B: 2",
            diagnostic: "550 unknown\r\nAction: delivered\r\n\r\nFinal-Recipient: rfc822; eve@example.org\u{85}X-C: 3",
            diagnosticIsSMTPReply: true)
        let report = DeliveryStatusReport(
            kind: .failure, reportingMTA: "mx.example.test", envelopeID: "id\r\nX-D: 4", arrivalDate: Self.arrival,
            originalSender: "alice@example.test\r\nBcc: eve@example.org", recipients: [recipient])
        let parsed = try ParsedReport(Self.render(report).data)
        #expect(!parsed.header.names.contains("Bcc"))
        #expect(parsed.header["To"] == "<alice@example.test Bcc: eve@example.org>")
        let blocks = parsed.statusBlocks
        #expect(blocks.count == 2)
        #expect(blocks[0].names == ["Reporting-MTA", "Original-Envelope-Id", "Arrival-Date"])
        #expect(
            blocks[1].names == [
                "Original-Recipient", "Final-Recipient", "Action", "Status", "Remote-MTA", "Diagnostic-Code",
            ])
        #expect(blocks[1]["Action"] == "failed")
        #expect(
            blocks[1]["Diagnostic-Code"]
                == "smtp; 550 unknown Action: delivered Final-Recipient: rfc822; eve@example.org X-C: 3")
    }

    enum Collision: String, CaseIterable, Sendable { case original, diagnostic }

    /// RFC 2046 §5.1.1: the boundary must not occur in any part.
    @Test(arguments: Collision.allCases)
    func aBoundaryFoundInAPartIsReplaced(collision: Collision) throws {
        var taken: [String] = []
        for _ in 0..<3 {
            let quoted = taken.map { "--\($0)\r\n" }.joined()
            var recipient = Self.bob
            var original = Self.original
            switch collision {
            case .original: original += quoted
            case .diagnostic: recipient.diagnostic = quoted
            }
            let parsed = try ParsedReport(Self.render(Self.failure([recipient]), original: original).data)
            #expect(!taken.contains(parsed.boundary))
            #expect(parsed.parts.count == 3)
            if collision == .original { #expect(parsed.returned.body == original) }
            taken.append(parsed.boundary)
        }
    }

    @Test(
        arguments: [
            ("Subject: Hello\r\n\r\nHi\r\n", nil, false, ["7bit", "7bit", "7bit"], "us-ascii"),
            ("Subject: Grüße\r\n\r\nHi\r\n", nil, true, ["7bit", "7bit", "8bit"], "us-ascii"),
            ("Subject: Hello\r\n\r\nHi\r\n", "550 Empfänger unbekannt", true, ["8bit", "8bit", "7bit"], "utf-8"),
        ] as [(String, String?, Bool, [String], String)])
    func eightBitContentIsMarked(
        original: String, diagnostic: String?, eightBit: Bool, encodings: [String], charset: String
    ) throws {
        var recipient = Self.bob
        if let diagnostic { recipient.diagnostic = diagnostic }
        let rendered = Self.render(Self.failure([recipient]), original: original)
        #expect(rendered.eightBit == eightBit)
        let parsed = try ParsedReport(rendered.data)
        #expect(parsed.header["Content-Transfer-Encoding"] == (eightBit ? "8bit" : "7bit"))
        #expect(parsed.parts.map { $0["Content-Transfer-Encoding"] } == encodings)
        #expect(parsed.explanation["Content-Type"] == "text/plain; charset=\(charset)")
    }

    /// RFC 6533: UTF-8 in the report's fields or in the returned header section makes the
    /// report "global"; otherwise the RFC 3464 types stay.
    @Test(
        arguments: [
            ("bob@example.net", "Subject: Hello\r\n\r\nHi\r\n", true, "delivery-status", "message/rfc822"),
            ("bob@example.net", "Subject: Hello\r\n\r\nHi\r\n", false, "delivery-status", "text/rfc822-headers"),
            ("bob@example.net", "Subject: Grüße\r\n\r\nHi\r\n", true, "delivery-status", "message/global"),
            ("bob@example.net", "Subject: Grüße\r\n\r\nHi\r\n", false, "delivery-status", "message/global-headers"),
            ("bob@example.net", "Subject: Hello\r\n\r\nGrüße\r\n", true, "delivery-status", "message/rfc822"),
            ("jürgen@example.net", "Subject: Hello\r\n\r\nHi\r\n", true, "global-delivery-status", "message/rfc822"),
        ] as [(String, String, Bool, String, String)])
    func internationalisedReportsUseTheGlobalTypes(
        recipient address: String, original: String, includeBody: Bool, reportType: String, returnedType: String
    ) throws {
        var recipient = Self.bob
        recipient.finalRecipient = address
        recipient.diagnostic = "550 5.1.1 user unknown"
        let parsed = try ParsedReport(
            Self.render(Self.failure([recipient]), original: original, includeBody: includeBody).data)
        #expect(parsed.header["Content-Type"]?.hasPrefix("multipart/report; report-type=\(reportType);") == true)
        #expect(
            parsed.parts[1]["Content-Type"] == (reportType == "delivery-status" ? "message/" : "message/global-")
                + "delivery-status")
        #expect(parsed.parts[2]["Content-Type"] == returnedType)
        let addressType = address.utf8.allSatisfy { $0 < 0x80 } ? "rfc822" : "utf-8"
        #expect(parsed.statusBlocks[1]["Final-Recipient"] == "\(addressType); \(address)")
    }

    @Test func aNullSenderDoesNotCrash() throws {
        let parsed = try ParsedReport(Self.render(Self.failure(sender: "")).data)
        #expect(parsed.header["To"] == "<>")
    }

    static let python = "/usr/bin/python3"

    /// An independent reader: Python's `email` package must see the same structure.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: python)))
    func pythonEmailPackageReadsTheReport() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("tern-dsn-\(UUID().uuidString).eml")
        try Data(Self.render(Self.failure()).data.readableBytesView).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let script = """
            import email, email.policy, sys
            with open(sys.argv[1], 'rb') as f:
                message = email.message_from_bytes(f.read(), policy=email.policy.default)
            assert message.get_content_type() == 'multipart/report', message.get_content_type()
            assert message.get_param('report-type') == 'delivery-status'
            assert message['Auto-Submitted'] == 'auto-replied'
            parts = list(message.iter_parts())
            types = [part.get_content_type() for part in parts]
            assert types == ['text/plain', 'message/delivery-status', 'message/rfc822'], types
            blocks = parts[1].get_payload()
            assert blocks[0]['Reporting-MTA'] == 'dns; mx.example.test', blocks[0]['Reporting-MTA']
            assert (blocks[1]['Action'], blocks[1]['Status']) == ('failed', '5.1.1'), dict(blocks[1])
            assert parts[2].get_payload()[0]['Subject'] == 'Hello'
            defects = [defect for part in message.walk() for defect in part.defects]
            assert not defects, defects
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.python)
        process.arguments = ["-c", script, file.path]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let said = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(said)")
    }
}
