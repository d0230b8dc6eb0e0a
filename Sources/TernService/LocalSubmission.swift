import Foundation
import MailMessage
import MailPolicy
import MailQueue
import NIOCore
import SMTPProtocol

/// A message handed to `tern sendmail` by a local program (SPEC §1.5), on its way into the
/// queue. Local programs write LF line ends and often leave out `Date:` and `Message-ID:`;
/// RFC 6409 §8 lets a submission service add them, and we do, as for authenticated SMTP.
public struct LocalSubmission: Sendable, Codable {
    /// The envelope sender; "" for the null sender.
    public var sender: String
    /// Recipients from the command line, plus To/Cc/Bcc with `-t`.
    public var recipients: [String]
    /// The message as read from standard input.
    public var message: Data
    /// `-t`: take recipients from the header, and remove `Bcc:`.
    public var recipientsFromHeaders: Bool
    /// The submitting user, for `Received:` and logs.
    public var user: String
    /// `--require-tls`: queue the message as REQUIRETLS (RFC 8689), as if it had come over SMTP
    /// with that MAIL parameter. Optional so that an older client's request still decodes.
    public var requireTLS: Bool?

    public init(
        sender: String, recipients: [String], message: Data, recipientsFromHeaders: Bool, user: String,
        requireTLS: Bool = false
    ) {
        self.requireTLS = requireTLS
        self.sender = sender
        self.recipients = recipients
        self.message = message
        self.recipientsFromHeaders = recipientsFromHeaders
        self.user = user
    }

    /// Reads standard input as sendmail does: to end of file with `-i`, otherwise up to a line
    /// holding a single dot.
    public static func readMessage(from handle: FileHandle, stopAtDot: Bool) -> Data {
        let data = handle.readDataToEndOfFile()
        guard stopAtDot else { return data }
        var lineStart = data.startIndex
        while lineStart < data.endIndex {
            let lineEnd = data[lineStart...].firstIndex(of: 10) ?? data.endIndex
            var line = data[lineStart..<lineEnd]
            if line.last == 13 { line = line.dropLast() }
            if line.count == 1 && line.first == UInt8(ascii: ".") { return data[data.startIndex..<lineStart] }
            lineStart = lineEnd == data.endIndex ? lineEnd : lineEnd + 1
        }
        return data
    }

    /// The message with CRLF line ends, Bcc removed under `-t`, missing Date/Message-ID/From
    /// added, and the header recipients that `-t` asks for.
    func prepared(hostname: String, id: QueueID, now: Int) -> (message: [UInt8], headerRecipients: [String]) {
        // Split into lines on LF (CRLF tolerated), header section first.
        var lines: [[UInt8]] = []
        var current: [UInt8] = []
        for byte in message {
            if byte == 10 {
                if current.last == 13 { current.removeLast() }
                lines.append(current)
                current = []
            } else {
                current.append(byte)
            }
        }
        if !current.isEmpty { lines.append(current) }

        var headerEnd = lines.firstIndex(where: { $0.isEmpty }) ?? lines.count
        // A first line that is not a header field means there is no header section at all.
        if let first = lines.first, !isFieldLine(first) { headerEnd = 0 }

        var header: [[UInt8]] = []
        var recipients: [String] = []
        var seen: Set<String> = []
        var index = 0
        while index < headerEnd {
            var field = [lines[index]]
            index += 1
            while index < headerEnd, let first = lines[index].first, first == 32 || first == 9 {
                field.append(lines[index])
                index += 1
            }
            let name = fieldName(field[0])
            if recipientsFromHeaders && ["to", "cc", "bcc"].contains(name) {
                let value = field.map { String(decoding: $0, as: UTF8.self) }.joined(separator: " ")
                let afterColon = value[value.index(after: value.firstIndex(of: ":")!)...]
                recipients += AddressList.addresses(in: String(afterColon))
            }
            if name == "bcc" { continue }
            seen.insert(name)
            header += field
        }

        var added = ""
        if !seen.contains("from") {
            added += "From: \(sender.isEmpty ? "MAILER-DAEMON@\(hostname)" : sender)\r\n"
        }
        if !seen.contains("date") { added += "Date: \(MessageDate.format(secondsSince1970: now))\r\n" }
        if !seen.contains("message-id") { added += "Message-ID: <\(id).\(now)@\(hostname)>\r\n" }

        var output: [UInt8] = []
        output.reserveCapacity(message.count + lines.count + 512)
        for line in header {
            output += line
            output += [13, 10]
        }
        output += Array(added.utf8)
        output += [13, 10]
        let bodyStart = headerEnd < lines.count && lines[headerEnd].isEmpty ? headerEnd + 1 : headerEnd
        for line in lines[bodyStart...] {
            output += line
            output += [13, 10]
        }
        return (output, recipients)
    }

    private func isFieldLine(_ line: [UInt8]) -> Bool {
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > 0 else { return false }
        return line[..<colon].allSatisfy { $0 > 32 && $0 < 127 }
    }

    private func fieldName(_ line: [UInt8]) -> String {
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { return "" }
        return String(decoding: line[..<colon], as: UTF8.self).lowercased()
    }

    /// Verifies the recipients, writes the message to the queue and returns it. A local
    /// program is trusted like a trusted network, but every recipient is still checked, so a
    /// typo in a local address fails here rather than bouncing later.
    func submit(
        to queue: QueueStore, policy: RecipientPolicy, hostname: String, maxMessageSize: Int,
        now: Int = Int(Date().timeIntervalSince1970)
    ) async throws(SubmissionError) -> QueuedMessage {
        // The same limit as over SMTP (SPEC §1.2 max_message_size), checked before any work.
        guard message.count <= maxMessageSize else { throw .tooLarge(maxMessageSize) }
        let id = QueueID.generate()
        let (body, headerRecipients) = prepared(hostname: hostname, id: id, now: now)
        let senderPath: ReversePath
        if sender.isEmpty {
            senderPath = .null
        } else {
            do {
                senderPath = .mailbox(try Mailbox.parse(sender))
            } catch {
                throw .badAddress(sender, error.reply.description)
            }
        }
        var queued: [QueuedRecipient] = []
        var seen = Set<String>()
        for address in recipients + headerRecipients {
            let mailbox: Mailbox
            do {
                mailbox = try Mailbox.parse(address)
            } catch {
                throw .badAddress(address, error.reply.description)
            }
            switch policy.verify(.mailbox(mailbox), client: ClientFacts(address: nil, isTrusted: true)) {
            case .failure(let refusal):
                throw .refused(address, refusal.reply.description)
            case .success(let targets):
                for target in targets where seen.insert(target.lowercased()).inserted {
                    queued.append(QueuedRecipient(address: target, originalRecipient: "rfc822;\(mailbox)", notify: nil))
                }
            }
        }
        guard !queued.isEmpty else { throw .noRecipients }
        let smtpUTF8 =
            senderPath.mailbox?.requiresSMTPUTF8 == true || queued.contains { $0.address.utf8.contains { $0 >= 0x80 } }
        let envelope = QueueEnvelope(
            sender: senderPath.description, recipients: queued, bodyType: nil, smtpUTF8: smtpUTF8, dsnReturn: nil,
            envelopeID: nil, clientAddress: nil, heloName: nil, authenticatedUser: user, requireTLS: requireTLS ?? false
        )
        do {
            let spool = try queue.makeSpool(id: id)
            let received = TraceHeaders.received(
                heloName: nil, reverseName: nil, clientAddress: nil, hostname: hostname, protocol: .local,
                queueID: "\(id)", recipient: queued.count == 1 ? queued[0].address : nil, secondsSince1970: now)
            do {
                try spool.write(ByteBuffer(string: received))
                try spool.write(ByteBuffer(bytes: body))
                return try await queue.commit(spool, envelope: envelope)
            } catch {
                spool.discard()
                throw error
            }
        } catch {
            throw .storage("\(error)")
        }
    }
}

public enum SubmissionError: Error, Sendable, CustomStringConvertible, Equatable {
    case badAddress(String, String)
    case refused(String, String)
    case noRecipients
    case tooLarge(Int)
    case storage(String)

    public var description: String {
        switch self {
        case .badAddress(let address, let reason): return "\(address): \(reason)"
        case .refused(let address, let reason): return "\(address): \(reason)"
        case .noRecipients: return "no recipients given"
        case .tooLarge(let limit): return "message larger than max_message_size (\(limit) octets)"
        case .storage(let reason): return "cannot queue the message: \(reason)"
        }
    }

    /// The sysexits(3) code sendmail callers expect.
    public var exitCode: Int32 {
        switch self {
        case .badAddress: return 65  // EX_DATAERR
        case .refused: return 67  // EX_NOUSER
        case .noRecipients: return 64  // EX_USAGE
        case .tooLarge: return 65  // EX_DATAERR
        case .storage: return 75  // EX_TEMPFAIL
        }
    }
}
