import MailMessage
import MailQueue
import NIOCore
import SMTPProtocol

/// The content of one message as it streams in: written to the queue's spool, measured, and
/// judged at the end. After a limit is crossed nothing more is stored, but the caller keeps
/// reading to the real end of the content (the smuggling rule: the rest must never be read as
/// commands).
final class IncomingMessage {
    let spool: MessageSpool
    private let limits: SMTPLimits
    private var scanner = HeaderSectionScanner()
    private var contentSize = 0
    private var storageError: (any Error)?
    /// BDAT content has no dot-stuffing, so its line endings are checked here (DATA's by the
    /// decoder): relayed on, a bare LF could still split a message at the next hop.
    private var chunkCheck: ContentLineCheck
    /// For a submission (RFC 6409 §8.2, §8.3): the header section is held back until it is
    /// complete, so that a missing `Date:` or `Message-ID:` can be written before it.
    private var completion: Completion?
    private var heldHeader = ByteBuffer()
    /// Sees the content exactly as the client sent it (DKIM hashes it as it streams in).
    var observer: (any ContentObserver)?

    /// The fields a submission service adds when the message lacks them.
    struct Completion {
        var messageID: String
        var date: String
    }

    init(spool: MessageSpool, limits: SMTPLimits, completion: Completion? = nil) {
        self.spool = spool
        self.limits = limits
        self.chunkCheck = ContentLineCheck(maxLineLength: limits.textLineLength)
        self.completion = completion
    }

    func writeTrace(_ field: String) throws {
        try spool.write(ByteBuffer(string: field))
    }

    func append(_ content: ByteBuffer) {
        contentSize += content.readableBytes
        guard fatalRefusal == nil else { return }
        scanner.scan(content)
        observer?.observe(content)
        if completion != nil {
            var content = content
            heldHeader.writeBuffer(&content)
            // Held at most as long as the header section is allowed to be.
            guard scanner.headerComplete || heldHeader.readableBytes > limits.headerSize else { return }
            releaseHeader()
            return
        }
        write(content)
    }

    private func write(_ content: ByteBuffer) {
        do {
            try spool.write(content)
        } catch {
            storageError = error
        }
    }

    /// Writes the missing fields, then the held header section (and whatever followed it in
    /// the same chunk).
    private func releaseHeader() {
        guard let completion else { return }
        self.completion = nil
        var added = ""
        if !scanner.presence.contains(.date) { added += "Date: \(completion.date)\r\n" }
        if !scanner.presence.contains(.messageID) { added += "Message-ID: \(completion.messageID)\r\n" }
        if !added.isEmpty { write(ByteBuffer(string: added)) }
        write(heldHeader)
        heldHeader = ByteBuffer()
    }

    func appendChunk(_ content: ByteBuffer) {
        chunkCheck.scan(content)
        append(content)
    }

    /// A refusal that no later octet can undo: the message is too big or cannot be stored.
    var fatalRefusal: SMTPReply? {
        if storageError != nil {
            return SMTPReply(452, EnhancedStatusCode(4, 3, 1), "Insufficient system storage")
        }
        if contentSize > limits.messageSize {
            // RFC 1870 §6.3: 552 with 5.3.4 for a message over the announced size.
            return SMTPReply(552, EnhancedStatusCode(5, 3, 4), "Message size exceeds fixed maximum message size")
        }
        if scanner.headerSize > limits.headerSize {
            return SMTPReply(552, EnhancedStatusCode(5, 3, 4), "Message header exceeds size limit")
        }
        return nil
    }

    /// The verdict at the end of DATA.
    func verdict(violations: DataViolations) -> SMTPReply? {
        if fatalRefusal == nil { releaseHeader() }
        if let fatalRefusal { return fatalRefusal }
        if violations.contains(.nul) {
            return SMTPReply(550, EnhancedStatusCode(5, 6, 0), "Message contains NUL octets")
        }
        if violations.contains(.bareLF) || violations.contains(.bareCR) {
            // RFC 5321 §2.3.8: CR and LF only ever appear together as CRLF. Postfix says the same.
            return SMTPReply(550, EnhancedStatusCode(5, 5, 2), "Message contains bare CR or LF; use CRLF line endings")
        }
        if violations.contains(.longLine) {
            return SMTPReply(
                550, EnhancedStatusCode(5, 5, 2),
                "Message has a line over \(limits.textLineLength) octets (RFC 5321 4.5.3.1.6)")
        }
        if scanner.receivedCount >= limits.receivedHeaders {
            // RFC 5321 §6.3: too many Received fields means a mail loop.
            return SMTPReply(554, EnhancedStatusCode(5, 4, 6), "Too many hops: mail forwarding loop")
        }
        return nil
    }

    /// The verdict after a BDAT chunk: only fatal problems stop a message between chunks.
    func chunkVerdict(last: Bool) -> SMTPReply? {
        last ? verdict(violations: chunkCheck.violations) : fatalRefusal
    }
}
