import Foundation
import NIOCore

/// A delivery status notification (RFC 3464): the bounce or the delay warning Tern sends from
/// the null sender to the envelope sender of a message it could not deliver. It renders as an
/// RFC 6522 `multipart/report` of three parts: an explanation for people, the
/// `message/delivery-status` fields for programs, and the original message or its header section.
public struct DeliveryStatusReport: Sendable {
    /// A bounce (`Undelivered Mail`), a warning that delivery is still being retried, or the
    /// success report a sender asked for with NOTIFY=SUCCESS (RFC 3461 §4.1).
    public enum Kind: Sendable { case failure, delay, success }

    /// RFC 3464 §2.3.3 `action-value`.
    public enum Action: String, Sendable { case failed, delayed, delivered, relayed, expanded }

    /// One recipient's block of per-recipient fields (RFC 3464 §2.3).
    public struct Recipient: Sendable, Hashable {
        /// The address delivery was tried for: `bob@example.net`.
        public var finalRecipient: String
        /// The RFC 3461 ORCPT as stored, xtext-decoded: `rfc822;bob@example.net`.
        public var originalRecipient: String?
        public var action: Action
        /// RFC 3463 enhanced status code: `5.1.1`.
        public var status: String
        /// Host name of the server that answered.
        public var remoteMTA: String?
        /// The server's reply (its lines joined by "\n"), or Tern's own reason when no server answered.
        public var diagnostic: String?
        /// `diagnostic` is a reply from `remoteMTA` (`smtp;`) rather than Tern's own text (`X-Tern;`).
        public var diagnosticIsSMTPReply: Bool
        public var lastAttempt: Date?
        /// Until when a delayed message is retried (delay reports only).
        public var willRetryUntil: Date?

        public init(
            finalRecipient: String, originalRecipient: String? = nil, action: Action, status: String,
            remoteMTA: String? = nil, diagnostic: String? = nil, diagnosticIsSMTPReply: Bool = false,
            lastAttempt: Date? = nil, willRetryUntil: Date? = nil
        ) {
            self.finalRecipient = finalRecipient
            self.originalRecipient = originalRecipient
            self.action = action
            self.status = status
            self.remoteMTA = remoteMTA
            self.diagnostic = diagnostic
            self.diagnosticIsSMTPReply = diagnosticIsSMTPReply
            self.lastAttempt = lastAttempt
            self.willRetryUntil = willRetryUntil
        }
    }

    public var kind: Kind
    /// This host's name: `mx.example.test`.
    public var reportingMTA: String
    /// The RFC 3461 ENVID, xtext-decoded.
    public var envelopeID: String?
    public var arrivalDate: Date
    /// The envelope sender of the original message, to whom the report goes.
    public var originalSender: String
    /// Only these recipients are reported: the failed ones, or the delayed ones.
    public var recipients: [Recipient]

    public init(
        kind: Kind, reportingMTA: String, envelopeID: String? = nil, arrivalDate: Date, originalSender: String,
        recipients: [Recipient]
    ) {
        self.kind = kind
        self.reportingMTA = reportingMTA
        self.envelopeID = envelopeID
        self.arrivalDate = arrivalDate
        self.originalSender = originalSender
        self.recipients = recipients
    }

    public struct Rendered: Sendable {
        public var data: ByteBuffer
        /// Some octet is 0x80 or above: send with `BODY=8BITMIME` (RFC 6152).
        public var eightBit: Bool
    }

    /// The whole message (header section and body, CRLF line ends), ready to queue from the null
    /// sender to `originalSender`. `original` is the original message as stored, perhaps only its
    /// first octets. `includeBody` false returns only its header section, as
    /// `text/rfc822-headers` (RFC 6522 §4); true returns all of `original` as `message/rfc822`.
    public func render(messageID: String, date: Date, original: ByteBuffer, includeBody: Bool) -> Rendered {
        let explanation = ByteBuffer(string: notification(includeBody: includeBody))
        let status = ByteBuffer(string: deliveryStatusFields())
        let returned = Self.returnedContent(original, headerSectionOnly: !includeBody)
        // RFC 6533: UTF-8 in the report's fields (an internationalised address, a server's UTF-8
        // reply) or in the returned header section calls for the "global" media types.
        let globalStatus = Self.isEightBit(status)
        let headerSection = includeBody ? Self.returnedContent(original, headerSectionOnly: true) : returned
        let globalReturned = Self.isEightBit(headerSection)
        let returnedType =
            includeBody
            ? (globalReturned ? "message/global" : "message/rfc822")
            : (globalReturned ? "message/global-headers" : "text/rfc822-headers")
        let parts = [
            Part(
                description: "Notification",
                type: "text/plain; charset=\(Self.isEightBit(explanation) ? "utf-8" : "us-ascii")",
                content: explanation),
            Part(
                description: "Delivery report",
                type: globalStatus ? "message/global-delivery-status" : "message/delivery-status", content: status),
            Part(
                description: includeBody ? "Returned message" : "Returned message header section",
                type: returnedType, content: returned),
        ]
        let boundary = Self.boundary(messageID: messageID, avoiding: parts.map(\.content))

        var header = Self.field("From", "Mail Delivery System <MAILER-DAEMON@\(reportingMTA)>")
        header += Self.field("To", "<\(originalSender)>")
        header += Self.field("Subject", subject)
        header += Self.field("Date", Self.format(date))
        header += Self.field("Message-ID", "<\(messageID)>")
        // RFC 3834 §5: no vacation responder or other automatic agent answers this message.
        header += Self.field("Auto-Submitted", "auto-replied")
        header += Self.field("MIME-Version", "1.0")
        let reportType = globalStatus ? "global-delivery-status" : "delivery-status"
        header += Self.field("Content-Type", "multipart/report; report-type=\(reportType); boundary=\"\(boundary)\"")
        let eightBit = !header.utf8.allSatisfy { $0 < 0x80 } || parts.contains { Self.isEightBit($0.content) }
        header += Self.field("Content-Transfer-Encoding", eightBit ? "8bit" : "7bit")

        var data = ByteBuffer()
        data.reserveCapacity(header.utf8.count + parts.reduce(512) { $0 + $1.content.readableBytes })
        data.writeString(header)
        data.writeString("\r\nThis is a MIME-encapsulated message.\r\n")
        for part in parts {
            // Every part ends in CRLF; the CRLF before "--" belongs to the delimiter (RFC 2046 §5.1.1).
            data.writeString("\r\n--\(boundary)\r\n")
            data.writeString(Self.field("Content-Description", part.description))
            data.writeString(Self.field("Content-Type", part.type))
            data.writeString(Self.field("Content-Transfer-Encoding", Self.isEightBit(part.content) ? "8bit" : "7bit"))
            data.writeString("\r\n")
            data.writeImmutableBuffer(part.content)
        }
        data.writeString("\r\n--\(boundary)--\r\n")
        return Rendered(data: data, eightBit: eightBit)
    }

    private var subject: String {
        switch kind {
        case .failure: return "Undelivered Mail Returned to Sender"
        case .delay: return "Delayed Mail (still being retried)"
        case .success: return "Successful Mail Delivery Report"
        }
    }

    private struct Part {
        var description: String
        var type: String
        var content: ByteBuffer
    }

    /// The first part, worded after Postfix's bounce: what happened, then one entry per recipient
    /// with the server's reply quoted.
    private func notification(includeBody: Bool) -> String {
        var paragraphs = ["This is the mail system at host \(reportingMTA)."]
        let attached = includeBody ? "It is attached below." : "Its header section is attached below."
        switch kind {
        case .failure:
            paragraphs.append(
                "I'm sorry to have to inform you that your message could not be delivered to one or more "
                    + "recipients. \(attached)")
        case .delay:
            var retried = "it is still being retried"
            if let until = recipients.compactMap(\.willRetryUntil).max() { retried += " until \(Self.format(until))" }
            paragraphs.append(
                "This is a warning only; you do not need to resend your message. Your message could not yet be "
                    + "delivered to one or more recipients, and \(retried). \(attached)")
        case .success:
            paragraphs.append(
                "Your message was delivered to the recipients listed below, as you asked. Where it was relayed "
                    + "to a system that does not report delivery, you will hear no more from it unless it fails "
                    + "there. \(attached)")
        }
        paragraphs.append(
            "For further assistance, please send mail to postmaster. If you do so, please include this problem "
                + "report.")
        paragraphs.append("The mail system")

        var lines = paragraphs.flatMap { Self.wrap(Self.words($0), first: "", continuation: "") + [""] }
        for recipient in recipients {
            let reason: String
            if let diagnostic = Self.diagnosticLine(recipient) {
                if recipient.diagnosticIsSMTPReply, let host = recipient.remoteMTA {
                    reason = "host \(host) said: \(diagnostic)"
                } else {
                    reason = diagnostic
                }
            } else {
                reason = "\(recipient.action.rawValue), status \(recipient.status)"
            }
            lines += Self.wrap(Self.words("<\(recipient.finalRecipient)>: \(reason)"), first: "", continuation: "    ")
        }
        return lines.map { $0 + "\r\n" }.joined()
    }

    /// The second part (RFC 3464 §2.1): the per-message fields, then each recipient's fields after
    /// an empty line, in the order of §2.2 and §2.3.
    private func deliveryStatusFields() -> String {
        var fields = Self.field("Reporting-MTA", "dns; \(reportingMTA)")
        if let envelopeID, !envelopeID.isEmpty { fields += Self.field("Original-Envelope-Id", envelopeID) }
        fields += Self.field("Arrival-Date", Self.format(arrivalDate))
        for recipient in recipients {
            fields += "\r\n"
            if let original = recipient.originalRecipient, !original.isEmpty {
                fields += Self.field("Original-Recipient", original)
            }
            // RFC 6533 §3: an address with UTF-8 in it is of type utf-8, not rfc822.
            let addressType = recipient.finalRecipient.utf8.allSatisfy { $0 < 0x80 } ? "rfc822" : "utf-8"
            fields += Self.field("Final-Recipient", "\(addressType); \(recipient.finalRecipient)")
            fields += Self.field("Action", recipient.action.rawValue)
            fields += Self.field("Status", recipient.status)
            if let host = recipient.remoteMTA { fields += Self.field("Remote-MTA", "dns; \(host)") }
            if let diagnostic = Self.diagnosticLine(recipient) {
                // §2.3.6: `smtp` says the text is an SMTP reply; an `X-` type names Tern's own words.
                let type = recipient.diagnosticIsSMTPReply ? "smtp" : "X-Tern"
                fields += Self.field("Diagnostic-Code", "\(type); \(diagnostic)")
            }
            if let lastAttempt = recipient.lastAttempt {
                fields += Self.field("Last-Attempt-Date", Self.format(lastAttempt))
            }
            if kind == .delay, let until = recipient.willRetryUntil {
                fields += Self.field("Will-Retry-Until", Self.format(until))
            }
        }
        return fields
    }

    /// The third part: `original` with CRLF line ends (a bare LF or CR ends a line too), lines
    /// longer than 998 octets broken, and with `headerSectionOnly` nothing after the empty line
    /// that ends the header section (all of it when there is none).
    private static func returnedContent(_ original: ByteBuffer, headerSectionOnly: Bool) -> ByteBuffer {
        var content = ByteBuffer()
        content.reserveCapacity(original.readableBytes + 2)
        original.withUnsafeReadableBytes { bytes in
            var copied = 0
            var lineLength = 0
            var index = 0
            func copy(upTo end: Int) { content.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[copied..<end])) }
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\r") || byte == UInt8(ascii: "\n") {
                    copy(upTo: index)
                    content.writeStaticString("\r\n")
                    let crlf =
                        byte == UInt8(ascii: "\r") && index + 1 < bytes.count && bytes[index + 1] == UInt8(ascii: "\n")
                    index += crlf ? 2 : 1
                    copied = index
                    if lineLength == 0 && headerSectionOnly { return }
                    lineLength = 0
                    continue
                }
                // RFC 5322 §2.1.1 allows 998 octets a line. Break before a UTF-8 sequence that
                // would not fit, as Postfix does with CRLF SP, which keeps a header field one field.
                if lineLength + sequenceLength(startingWith: byte) > maximumLineLength {
                    copy(upTo: index)
                    content.writeStaticString("\r\n ")
                    copied = index
                    lineLength = 1
                }
                lineLength += 1
                index += 1
            }
            copy(upTo: bytes.count)
            if lineLength > 0 { content.writeStaticString("\r\n") }
        }
        return content
    }

    /// Octets of the UTF-8 sequence `byte` starts; 1 for a continuation byte, so that one is
    /// only broken before at the hard limit.
    private static func sequenceLength(startingWith byte: UInt8) -> Int {
        switch byte {
        case 0xF0...: 4
        case 0xE0...: 3
        case 0xC0...: 2
        default: 1
        }
    }

    /// A boundary that occurs in no part (RFC 2046 §5.1.1): built from the message id, so that
    /// it differs from report to report, with a counter raised until no part contains it.
    private static func boundary(messageID: String, avoiding contents: [ByteBuffer]) -> String {
        // `bchars` allow more, but letters, digits, "." and "-" need no quoting thought; 70 at
        // most. "=_" never occurs in quoted-printable or base64 text.
        let id = String(
            messageID.unicodeScalars.filter { scalar in
                switch scalar {
                case "a"..."z", "A"..."Z", "0"..."9", ".", "-": true
                default: false
                }
            }
            .prefix(40))
        var counter = 0
        while true {
            let candidate = "=_Tern-DSN.\(counter).\(id)"
            let octets = Array(candidate.utf8)
            if !contents.contains(where: { occurs(octets, in: $0) }) { return candidate }
            counter += 1
        }
    }

    private static func occurs(_ needle: [UInt8], in buffer: ByteBuffer) -> Bool {
        buffer.withUnsafeReadableBytes { bytes in
            guard let first = needle.first, bytes.count >= needle.count else { return false }
            for start in 0...(bytes.count - needle.count) where bytes[start] == first {
                if needle.indices.allSatisfy({ bytes[start + $0] == needle[$0] }) { return true }
            }
            return false
        }
    }

    /// RFC 5322 §2.1.1: a line SHOULD be at most 78 octets and MUST be at most 998, CRLF excluded.
    private static let preferredLineLength = 78
    private static let maximumLineLength = 998

    /// One header field ending in CRLF, folded before a space (RFC 5322 §2.2.3) so that lines stay
    /// within 78 octets where the words allow. `value` passes through `words` first: no input can
    /// end the field early or start another.
    private static func field(_ name: String, _ value: String) -> String {
        wrap(words(value), first: "\(name): ", continuation: " ").map { $0 + "\r\n" }.joined()
    }

    /// `text` split at spaces, after every control character (CR and LF among them) and line or
    /// paragraph separator has become a space: a multi-line diagnostic reads as one line.
    private static func words(_ text: String) -> [String] {
        var spaced = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            switch scalar.properties.generalCategory {
            case .control, .lineSeparator, .paragraphSeparator: spaced.append(" ")
            default: spaced.append(scalar)
            }
        }
        return String(spaced).split(separator: " ").map(String.init)
    }

    /// `words` laid out on lines that start with `first` (the first line) or `continuation` (the
    /// others), a word moving to a new line when it would take its line past 78 octets. A word
    /// too long for 998 is cut at a scalar boundary: the only case that changes the text.
    private static func wrap(_ words: [String], first: String, continuation: String) -> [String] {
        let pieceLimit = maximumLineLength - max(first.utf8.count, continuation.utf8.count)
        var lines: [String] = []
        var line = first
        var lineHasWord = false
        for word in words {
            for piece in pieces(of: word, limit: pieceLimit) {
                if lineHasWord && line.utf8.count + 1 + piece.utf8.count > preferredLineLength {
                    lines.append(line)
                    line = continuation
                    lineHasWord = false
                }
                line += lineHasWord ? " " + piece : piece
                lineHasWord = true
            }
        }
        lines.append(line)
        return lines
    }

    /// `word` cut into pieces of at most `limit` octets, each a run of whole scalars.
    private static func pieces(of word: String, limit: Int) -> [String] {
        guard word.utf8.count > limit else { return [word] }
        var pieces: [String] = []
        var piece = String.UnicodeScalarView()
        var octets = 0
        for scalar in word.unicodeScalars {
            if octets + scalar.utf8.count > limit {
                pieces.append(String(piece))
                piece = String.UnicodeScalarView()
                octets = 0
            }
            piece.append(scalar)
            octets += scalar.utf8.count
        }
        pieces.append(String(piece))
        return pieces
    }

    /// A recipient's diagnostic on one line; nil when it has none or only white space.
    private static func diagnosticLine(_ recipient: Recipient) -> String? {
        let line = words(recipient.diagnostic ?? "").joined(separator: " ")
        return line.isEmpty ? nil : line
    }

    private static func format(_ date: Date) -> String {
        MessageDate.format(secondsSince1970: Int(date.timeIntervalSince1970.rounded(.down)))
    }

    private static func isEightBit(_ buffer: ByteBuffer) -> Bool {
        buffer.withUnsafeReadableBytes { bytes in bytes.contains { $0 >= 0x80 } }
    }
}
