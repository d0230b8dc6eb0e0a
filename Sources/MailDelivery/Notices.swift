import Foundation
import Logging
import MailMessage
import MailQueue
import NIOCore
import SMTPProtocol

/// Bounces and delay warnings (RFC 3464, RFC 3461; SPEC §2.3): what the sender learns about
/// recipients that failed or are late. A notice is an ordinary message in the queue, from the
/// null sender, so it is delivered, retried and expired like any other.
extension DeliveryScheduler {
    /// Original content returned in full up to this size (Postfix's `bounce_size_limit` is
    /// 50,000); beyond it, or with RET=HDRS, only the header section.
    static let returnedContentLimit = 100 * 1024

    /// Reports recipients that failed for good. A message from the null sender is itself a
    /// notice and never answered by one (RFC 5321 §4.5.5): its failure goes to postmaster,
    /// once; a failed notice to postmaster is dropped with a log line.
    func notifyFailure(_ message: QueuedMessage, failed: [(QueuedRecipient, DeliveryOutcome)], logger: Logger) async {
        let sender = message.envelope.sender
        if sender.isEmpty {
            let postmaster = settings.postmaster.lowercased()
            if failed.allSatisfy({ $0.0.address.lowercased() == postmaster }) {
                logger.warning(
                    "notice to postmaster failed; dropped",
                    metadata: ["event": "dropped", "reason": "undeliverable notice from the null sender to postmaster"])
                return
            }
            await sendNotice(.failure, about: message, recipients: failed, to: settings.postmaster, logger: logger)
            return
        }
        // RFC 3461 §4.1: NOTIFY=NEVER, or a list without FAILURE, asks for no bounce; without
        // NOTIFY the MTA decides, and a bounce is what everybody expects.
        let wanted = failed.filter { recipient, _ in
            recipient.notify.map { DSNNotify(rawValue: $0).contains(.failure) } ?? true
        }
        guard !wanted.isEmpty else { return }
        await sendNotice(.failure, about: message, recipients: wanted, to: sender, logger: logger)
    }

    /// Reports recipients delivered with NOTIFY=SUCCESS (RFC 3461 §4.1) whose next hop did not
    /// take the request over: "delivered" for a local mailbox, "relayed" for a server without
    /// DSN (§5.2.2). Never to the null sender.
    func notifySuccess(_ message: QueuedMessage, delivered: [(QueuedRecipient, DeliveryOutcome)], logger: Logger) async
    {
        guard !message.envelope.sender.isEmpty else { return }
        await sendNotice(.success, about: message, recipients: delivered, to: message.envelope.sender, logger: logger)
    }

    /// One delay warning per message, once it has waited `delay_warning`, for the recipients
    /// still deferred that did not refuse DELAY notices.
    func warnOfDelayIfDue(
        _ message: QueuedMessage, changes: [Int: RecipientChange], now: Date, logger: Logger
    ) async {
        guard let delayWarning = settings.delayWarning, !message.delayWarned, !message.envelope.sender.isEmpty,
            now.timeIntervalSince(message.arrival) >= Self.timeInterval(delayWarning)
        else { return }
        var delayed: [(QueuedRecipient, DeliveryOutcome)] = []
        for (index, var recipient) in message.envelope.recipients.enumerated() {
            if let change = changes[index] {
                recipient.status = change.status
                recipient.lastError = change.lastError
                recipient.nextAttempt = change.nextAttempt
            }
            guard recipient.status == .deferred,
                recipient.notify.map({ DSNNotify(rawValue: $0).contains(.delay) }) ?? true
            else { continue }
            delayed.append((recipient, DeliveryOutcome(recorded: recipient.lastError ?? "4.0.0 not yet delivered")))
        }
        if !delayed.isEmpty {
            await sendNotice(.delay, about: message, recipients: delayed, to: message.envelope.sender, logger: logger)
        }
        do {
            try await queue.markDelayWarned(message.id)
        } catch {
            logger.error("queue update failed", metadata: ["event": "error", "error": "\(error)"])
        }
    }

    /// Builds the report and queues it from `<>` to `recipient`.
    private func sendNotice(
        _ kind: DeliveryStatusReport.Kind, about message: QueuedMessage,
        recipients: [(QueuedRecipient, DeliveryOutcome)], to recipient: String, logger: Logger
    ) async {
        let expiry = message.arrival.addingTimeInterval(Self.timeInterval(settings.maxQueueTime))
        let report = DeliveryStatusReport(
            kind: kind, reportingMTA: settings.hostname, envelopeID: message.envelope.envelopeID,
            arrivalDate: message.arrival, originalSender: recipient,
            recipients: recipients.map { queued, outcome in
                let action: DeliveryStatusReport.Action
                switch kind {
                case .failure: action = .failed
                case .delay: action = .delayed
                case .success:
                    action = directory.isLocalDomain(Self.domain(of: queued.address)) ? .delivered : .relayed
                }
                return DeliveryStatusReport.Recipient(
                    finalRecipient: queued.address, originalRecipient: queued.originalRecipient,
                    action: action, status: outcome.status, remoteMTA: outcome.remoteMTA,
                    // A Maildir delivery's text is a file name, nothing the sender needs.
                    diagnostic: kind == .success && !outcome.fromServer ? nil : outcome.text,
                    diagnosticIsSMTPReply: outcome.fromServer, lastAttempt: Date(),
                    willRetryUntil: kind == .delay ? expiry : nil)
            })
        // RET (RFC 3461 §4.3) is about failure reports; the others carry the header section.
        // A REQUIRETLS message's content never goes back in a report, which itself travels
        // under REQUIRETLS (RFC 8689 §5).
        let includeBody =
            kind == .failure && message.envelope.dsnReturn != DSNReturn.headers.rawValue
            && message.size <= Self.returnedContentLimit && !message.envelope.requireTLS
        do {
            let original = try await readOriginal(message, limit: includeBody ? message.size : 64 * 1024)
            let id = QueueID.generate()
            let rendered = report.render(
                messageID: "\(id).\(settings.hostname)@\(settings.hostname)", date: Date(), original: original,
                includeBody: includeBody)
            let queue = self.queue
            let spool = try await threadPool.runIfActive {
                let spool = try queue.makeSpool(id: id)
                try spool.write(rendered.data)
                return spool
            }
            let envelope = QueueEnvelope(
                sender: "", recipients: [QueuedRecipient(address: recipient, notify: 0)],
                bodyType: rendered.eightBit ? BodyType.eightBitMIME.rawValue : nil,
                smtpUTF8: !recipient.utf8.allSatisfy { $0 < 0x80 }, requireTLS: message.envelope.requireTLS)
            let queued = try await queue.commit(spool, envelope: envelope)
            let (text, event): (Logger.Message, String)
            switch kind {
            case .failure: (text, event) = ("sender notified of failure", "bounce_queued")
            case .delay: (text, event) = ("sender notified of delay", "delay_warning_queued")
            case .success: (text, event) = ("sender notified of delivery", "success_notice_queued")
            }
            logger.info(text, metadata: ["event": "\(event)", "notice": "\(queued.id)", "to": "<\(recipient)>"])
            submit(queued.id)
        } catch {
            logger.error("notice could not be queued", metadata: ["event": "error", "error": "\(error)"])
        }
    }

    /// The first `limit` octets of the message as queued.
    private func readOriginal(_ message: QueuedMessage, limit: Int) async throws -> ByteBuffer {
        let queue = self.queue
        return try await threadPool.runIfActive {
            let reader = try queue.readData(message.id)
            var original = ByteBuffer()
            while original.readableBytes < limit,
                var chunk = try reader.next(maxBytes: min(256 * 1024, limit - original.readableBytes))
            {
                original.writeBuffer(&chunk)
            }
            return original
        }
    }
}

extension DeliveryOutcome {
    /// An outcome read back from a recipient's `lastError` (`status text`), for notices about
    /// recipients not tried in this pass.
    init(recorded: String) {
        let parts = recorded.split(separator: " ", maxSplits: 1)
        let status = parts.first.map(String.init) ?? "4.0.0"
        let looksLikeStatus = status.split(separator: ".").count == 3 && status.first.map { "245".contains($0) } == true
        self.init(
            kind: .deferred, status: looksLikeStatus ? status : "4.0.0",
            text: looksLikeStatus ? (parts.count > 1 ? String(parts[1]) : "") : recorded)
    }
}
