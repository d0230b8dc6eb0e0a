import Foundation
import Logging
import MailMessage
import MailPolicy
import MailQueue
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SMTPProtocol
import Synchronization

/// Takes queued messages to their recipients (SPEC §2.3): local mailboxes through Maildir or
/// LMTP, remote domains through a `RemoteTransport`; retries on `[delivery] retry`, bounces
/// after `max_queue_time`, warns once after `delay_warning`. Work comes from two places: the
/// server announces each new message, and a periodic scan of the queue finds everything due
/// (retries, and whatever was pending when Tern last stopped). Only the ids of messages waiting
/// for a worker are in memory, and at most `waitingLimit` of them.
public final class DeliveryScheduler: Sendable {
    public struct Settings: Sendable {
        public var hostname: String
        /// `<data_dir>/mail`: Maildirs live at `<root>/<domain>/<user>/` (SPEC §1.3).
        public var mailRoot: String
        /// `[delivery] retry`: the delay before attempt n+1; the last value repeats.
        public var retry: [Duration]
        /// `[delivery] max_queue_time`: a recipient still deferred after this bounces.
        public var maxQueueTime: Duration
        /// `[delivery] delay_warning`: when the sender hears that delivery is late; nil: never.
        public var delayWarning: Duration?
        /// Where a failed notice to the null sender goes, once (`postmaster@<first domain>`).
        public var postmaster: String
        /// `[delivery] local = "lmtp:…"`: local mailboxes get their mail over LMTP.
        public var lmtp: LMTPDelivery?
        /// Messages delivered at once.
        public var concurrency: Int
        public var scanInterval: Duration

        public init(
            hostname: String, mailRoot: String, retry: [Duration], maxQueueTime: Duration = .seconds(5 * 86400),
            delayWarning: Duration? = .seconds(4 * 3600), postmaster: String = "postmaster", lmtp: LMTPDelivery? = nil,
            concurrency: Int = 64, scanInterval: Duration = .seconds(5)
        ) {
            self.hostname = hostname
            self.mailRoot = mailRoot
            self.retry = retry.isEmpty ? [.seconds(60)] : retry
            self.maxQueueTime = maxQueueTime
            self.delayWarning = delayWarning
            self.postmaster = postmaster
            self.lmtp = lmtp
            self.concurrency = max(1, concurrency)
            self.scanInterval = scanInterval
        }
    }

    let settings: Settings
    let queue: QueueStore
    private let transport: any RemoteTransport
    let directory: any LocalRecipientDirectory
    let threadPool: NIOThreadPool
    private let logger: Logger
    private let work = Mutex(WorkQueue())

    /// Messages waiting for a worker, and idle workers waiting for a message.
    private struct WorkQueue: ~Copyable {
        var waiting = CircularBuffer<QueueID>()
        var idleWorkers: [CheckedContinuation<QueueID?, Never>] = []
        /// Every message waiting or being delivered, so that no message is taken twice: a scan
        /// finds again whatever is due but not yet done.
        var claimed = Set<QueueID>()
        var stopped = false
    }

    /// Messages that may wait for a worker; past this, new arrivals are left to the next scan.
    static let waitingLimit = 100_000

    public init(
        settings: Settings, queue: QueueStore, directory: any LocalRecipientDirectory,
        transport: any RemoteTransport, threadPool: NIOThreadPool, logger: Logger
    ) {
        self.settings = settings
        self.queue = queue
        self.transport = transport
        self.directory = directory
        self.threadPool = threadPool
        self.logger = logger
    }

    /// A new message is in the queue.
    public func submit(_ id: QueueID) {
        let worker: CheckedContinuation<QueueID?, Never>? = work.withLock { work in
            guard !work.stopped, work.waiting.count < Self.waitingLimit, work.claimed.insert(id).inserted else {
                return nil
            }
            guard let worker = work.idleWorkers.popLast() else {
                work.waiting.append(id)
                return nil
            }
            return worker
        }
        worker?.resume(returning: id)
    }

    /// Looks for due work now rather than at the next scan (`tern queue flush`).
    public func scanNow() {
        for id in queue.due(at: Date(), limit: 10_000) { submit(id) }
    }

    /// Delivers until cancelled, with `Settings.concurrency` workers. A delivery under way when
    /// cancelled finishes its current recipient; what is not recorded as delivered is tried again
    /// after restart.
    public func run() async {
        await withTaskCancellationHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    while !Task.isCancelled {
                        self.scanNow()
                        try? await Task.sleep(for: self.settings.scanInterval)
                    }
                }
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .seconds(1))
                        await self.transport.closeIdleConnections(all: false)
                    }
                    await self.transport.closeIdleConnections(all: true)
                }
                for _ in 0..<settings.concurrency {
                    group.addTask {
                        while let id = await self.nextMessage() {
                            await self.deliver(id) { self.release(id) }
                        }
                    }
                }
            }
        } onCancel: {
            let workers = work.withLock { work in
                work.stopped = true
                defer { work.idleWorkers = [] }
                return work.idleWorkers
            }
            for worker in workers { worker.resume(returning: nil) }
        }
    }

    /// The next message for a worker, or nil once the scheduler stops.
    private func nextMessage() async -> QueueID? {
        await withCheckedContinuation { continuation in
            let next: QueueID?? = work.withLock { work in
                if work.stopped { return .some(nil) }
                if let id = work.waiting.popFirst() { return .some(id) }
                work.idleWorkers.append(continuation)
                return .none
            }
            if case .some(let id) = next { continuation.resume(returning: id) }
        }
    }

    private func release(_ id: QueueID) {
        _ = work.withLock { $0.claimed.remove(id) }
    }

    /// One pass over a message: every recipient that is due gets one attempt, local ones in
    /// turn, each remote domain in parallel. `finished` runs once what the pass learned is
    /// recorded, which may be after this returns: deferrals alone are written without waiting
    /// for their sync (losing one in a crash only means an earlier retry).
    ///
    /// Order matters for what a crash may cost. A notice (bounce, delay warning) is queued
    /// before the state that caused it is recorded, and deliveries and bounces are recorded
    /// before `finished`: a crash in between repeats a notice, never loses one, and never
    /// delivers a recipient twice because its delivery went unrecorded.
    func deliver(_ id: QueueID, finished: @escaping @Sendable () -> Void) async {
        guard let message = queue.message(id), !message.held else { return finished() }
        var logger = self.logger
        logger[metadataKey: "queue_id"] = "\(id)"
        let now = Date()
        var local: [Int] = []
        var remote: [String: [Int]] = [:]
        for (index, recipient) in message.envelope.recipients.enumerated() where recipient.isDue(at: now) {
            let domain = Self.domain(of: recipient.address)
            if directory.isLocalDomain(domain) {
                local.append(index)
            } else {
                remote[domain, default: []].append(index)
            }
        }
        // Whether the content needs 8BITMIME is read from the content once per pass, and only
        // when a transfer will ask.
        let transfers = !remote.isEmpty || (settings.lmtp != nil && !local.isEmpty)
        let eightBit = transfers ? await needsEightBit(message) : false
        var outcomes: [(index: Int, outcome: DeliveryOutcome)] = []
        if let lmtp = settings.lmtp, !local.isEmpty {
            outcomes += await deliverOverLMTP(message, local, lmtp, eightBit: eightBit)
        } else {
            for index in local {
                outcomes.append((index, await deliverLocally(message, recipient: message.envelope.recipients[index])))
            }
        }
        if !remote.isEmpty {
            outcomes += await deliverRemotely(message, groups: remote, eightBit: eightBit)
        }
        await record(message, outcomes: outcomes, logger: logger, finished: finished)
    }

    /// Turns outcomes into queue state, log lines and notices.
    private func record(
        _ message: QueuedMessage, outcomes: [(index: Int, outcome: DeliveryOutcome)], logger: Logger,
        finished: @escaping @Sendable () -> Void
    ) async {
        let id = message.id
        let now = Date()
        let age = now.timeIntervalSince(message.arrival)
        let expiry = message.arrival.addingTimeInterval(Self.timeInterval(settings.maxQueueTime))
        var changes: [Int: RecipientChange] = [:]
        var failed: [(QueuedRecipient, DeliveryOutcome)] = []
        var succeeded: [(QueuedRecipient, DeliveryOutcome)] = []
        var mustWait = false
        for (index, var outcome) in outcomes {
            let recipient = message.envelope.recipients[index]
            let attempts = recipient.attempts + 1
            var metadata: Logger.Metadata = [
                "to": "<\(recipient.address)>", "delay": "\(Self.seconds(age))", "dsn": "\(outcome.status)",
            ]
            if let relay = outcome.relay { metadata["relay"] = "\(relay)" }
            if let tls = outcome.tls { metadata["tls"] = "\(tls)" }
            if let certificate = outcome.tlsCertificate { metadata["tls_cert"] = "\(certificate)" }
            if let policy = outcome.tlsPolicy, outcome.relay != nil { metadata["tls_policy"] = "\(policy)" }
            if let failure = outcome.tlsPolicyFailure { metadata["tls_policy_failure"] = "\(failure)" }
            if outcome.kind == .deferred, now >= expiry {
                // RFC 5321 §4.5.4.1: give up after the queue lifetime; the last reason goes along.
                outcome = DeliveryOutcome(
                    kind: .bounced, status: "4.4.7",
                    text: "delivery time expired after \(settings.maxQueueTime.configurationText): \(outcome.logText)",
                    remoteMTA: outcome.remoteMTA, relay: outcome.relay)
            }
            switch outcome.kind {
            case .delivered:
                changes[index] = RecipientChange(status: .delivered, attempts: attempts)
                mustWait = true
                metadata["event"] = "delivered"
                metadata["status"] = "sent"
                metadata["detail"] = "\(outcome.logText)"
                logger.info("delivered", metadata: metadata)
                if recipient.notify.map({ DSNNotify(rawValue: $0).contains(.success) }) == true, !outcome.dsnPassedOn {
                    succeeded.append((recipient, outcome))
                }
            case .deferred:
                let next = min(now.addingTimeInterval(retryDelay(afterAttempt: attempts)), expiry)
                changes[index] = RecipientChange(
                    status: .deferred, attempts: attempts, nextAttempt: max(next, now), lastError: outcome.recorded)
                metadata["event"] = "deferred"
                metadata["status"] = "deferred"
                metadata["reason"] = "\(outcome.logText)"
                metadata["next_attempt"] = "\(Int(next.timeIntervalSince1970))"
                logger.info("deferred", metadata: metadata)
            case .bounced:
                changes[index] = RecipientChange(status: .bounced, attempts: attempts, lastError: outcome.recorded)
                mustWait = true
                failed.append((recipient, outcome))
                metadata["event"] = "bounced"
                metadata["status"] = "bounced"
                metadata["reason"] = "\(outcome.logText)"
                logger.info("bounced", metadata: metadata)
            }
        }
        if !failed.isEmpty {
            await notifyFailure(message, failed: failed, logger: logger)
        }
        if !succeeded.isEmpty {
            await notifySuccess(message, delivered: succeeded, logger: logger)
        }
        await warnOfDelayIfDue(message, changes: changes, now: now, logger: logger)

        var recipients = message.envelope.recipients
        for (index, change) in changes { recipients[index].status = change.status }
        if recipients.allSatisfy(\.isFinal) {
            // Nothing left to do: the removal alone records it, and is waited for like a delivery
            // would be, so that a crash cannot deliver again what was delivered.
            do {
                try await queue.remove(id)
                logger.info("removed", metadata: ["event": "removed"])
            } catch {
                logger.error("queue remove failed", metadata: ["event": "error", "error": "\(error)"])
            }
            return finished()
        }
        if !changes.isEmpty {
            if mustWait {
                do {
                    try await queue.update(id, recipients: changes)
                } catch {
                    logger.error("queue update failed", metadata: ["event": "error", "error": "\(error)"])
                    return finished()
                }
            } else {
                queue.update(id, recipients: changes) { [logger] error in
                    if let error {
                        logger.error("queue update failed", metadata: ["event": "error", "error": "\(error)"])
                    }
                    finished()
                }
                return
            }
        }
        finished()
    }

    /// The remote recipients, one transfer per domain, the domains in parallel.
    private func deliverRemotely(
        _ message: QueuedMessage, groups: [String: [Int]], eightBit: Bool
    ) async -> [(index: Int, outcome: DeliveryOutcome)] {
        let content = contentReader(message.id)
        let envelope = message.envelope
        let transport = self.transport
        // RFC 8689 §3: with REQUIRETLS in the envelope the header field is ignored.
        // Read at most once, by whichever destination asks first.
        let known = NIOLockedValueBox<Bool?>(nil)
        let readsTLSOptional: (@Sendable () async -> Bool)? =
            envelope.requireTLS
            ? nil
            : { @Sendable in
                if let value = known.withLockedValue({ $0 }) { return value }
                let value = await Self.saysTLSNotRequired(content)
                known.withLockedValue { $0 = value }
                return value
            }
        return await withTaskGroup(of: [(index: Int, outcome: DeliveryOutcome)].self) { group in
            for (domain, indices) in groups {
                let recipients = indices.map { envelope.recipients[$0] }
                let outbound = OutboundMessage(
                    envelope: SMTPClientSession.Envelope(
                        sender: envelope.sender,
                        recipients: recipients.map(Self.clientRecipient),
                        size: message.size, eightBit: eightBit,
                        smtpUTF8: envelope.smtpUTF8
                            && !([envelope.sender] + recipients.map(\.address)).allSatisfy(Self.isASCII),
                        ret: envelope.dsnReturn.flatMap(DSNReturn.init(rawValue:)), envelopeID: envelope.envelopeID,
                        requireTLS: envelope.requireTLS),
                    content: content, readsTLSOptional: readsTLSOptional)
                group.addTask {
                    let outcomes = await transport.deliver(outbound, domain: domain)
                    return Array(zip(indices, outcomes)).map { (index: $0.0, outcome: $0.1) }
                }
            }
            var all: [(index: Int, outcome: DeliveryOutcome)] = []
            for await part in group { all += part }
            return all
        }
    }

    /// Opens the message's content from the queue; reads run on the thread pool.
    func contentReader(_ id: QueueID) -> @Sendable () async throws -> MessageContentReader {
        let queue = self.queue
        let threadPool = self.threadPool
        return {
            let reader = try await threadPool.runIfActive { try queue.readData(id) }
            return { try await threadPool.runIfActive { try reader.next(maxBytes: 64 * 1024) } }
        }
    }

    /// The header section says `TLS-Required: No` (RFC 8689 §5). Only its first 64 KiB are read:
    /// a field further down is past any sane header section.
    private static func saysTLSNotRequired(
        _ content: @Sendable () async throws -> MessageContentReader
    ) async -> Bool {
        do {
            let next = try await content()
            var header: [UInt8] = []
            while header.count < 64 * 1024, let chunk = try await next() {
                header += chunk.readableBytesView
                if header.count >= 4, chunk.readableBytesView.firstRange(of: [13, 10, 13, 10]) != nil { break }
            }
            return TLSRequiredField.saysNo(header)
        } catch {
            return false
        }
    }

    /// The message was received as 8BITMIME (or BINARYMIME) and has octets above 127: only
    /// then does a server have to offer 8BITMIME (RFC 6152 §3). Many clients declare it for
    /// plain ASCII.
    private func needsEightBit(_ message: QueuedMessage) async -> Bool {
        guard let body = message.envelope.bodyType, body != "7BIT" else { return false }
        do {
            let open = contentReader(message.id)
            let next = try await open()
            while let chunk = try await next() {
                if chunk.readableBytesView.contains(where: { $0 >= 0x80 }) { return true }
            }
            return false
        } catch {
            return true
        }
    }

    private static func clientRecipient(_ recipient: QueuedRecipient) -> SMTPClientSession.Recipient {
        var original: OriginalRecipient?
        if let text = recipient.originalRecipient, let semicolon = text.firstIndex(of: ";") {
            original = OriginalRecipient(
                addressType: String(text[..<semicolon]), address: String(text[text.index(after: semicolon)...]))
        }
        return SMTPClientSession.Recipient(
            address: recipient.address, notify: recipient.notify.map(DSNNotify.init(rawValue:)),
            originalRecipient: original)
    }

    private static func isASCII(_ text: String) -> Bool { text.utf8.allSatisfy { $0 < 0x80 } }

    static func domain(of address: String) -> String {
        guard let at = address.lastIndex(of: "@") else { return "" }
        return address[address.index(after: at)...].lowercased()
    }

    /// The local recipients in one LMTP transaction; those without a mailbox bounce first.
    private func deliverOverLMTP(
        _ message: QueuedMessage, _ indices: [Int], _ lmtp: LMTPDelivery, eightBit: Bool
    ) async -> [(index: Int, outcome: DeliveryOutcome)] {
        var outcomes: [(index: Int, outcome: DeliveryOutcome)] = []
        var existing: [Int] = []
        for index in indices {
            switch localMailbox(message.envelope.recipients[index].address) {
            case .found: existing.append(index)
            case .missing(let outcome): outcomes.append((index, outcome))
            }
        }
        guard !existing.isEmpty else { return outcomes }
        let results = await lmtp.deliver(
            message, recipients: existing.map { message.envelope.recipients[$0] },
            eightBit: eightBit, content: contentReader(message.id))
        return outcomes + zip(existing, results).map { (index: $0.0, outcome: $0.1) }
    }

    private enum LocalMailbox {
        case found(domain: String, mailbox: String)
        /// The bounce for an address without a mailbox.
        case missing(DeliveryOutcome)
    }

    private func localMailbox(_ address: String) -> LocalMailbox {
        guard let at = address.lastIndex(of: "@") else {
            return .missing(DeliveryOutcome(kind: .bounced, status: "5.1.3", text: "recipient address has no domain"))
        }
        let localPart = address[..<at].lowercased()
        let domain = address[address.index(after: at)...].lowercased()
        guard let mailbox = mailboxName(localPart: localPart, domain: domain) else {
            return .missing(
                DeliveryOutcome(kind: .bounced, status: "5.1.1", text: "mailbox \(localPart)@\(domain) does not exist"))
        }
        return .found(domain: domain, mailbox: mailbox)
    }

    /// Delivers into the recipient's Maildir (SPEC §1.3).
    private func deliverLocally(_ message: QueuedMessage, recipient: QueuedRecipient) async -> DeliveryOutcome {
        let domain: String
        let mailbox: String
        switch localMailbox(recipient.address) {
        case .found(let foundDomain, let foundMailbox): (domain, mailbox) = (foundDomain, foundMailbox)
        case .missing(let outcome): return outcome
        }
        let maildir = Maildir(path: "\(settings.mailRoot)/\(domain)/\(mailbox)")
        let prefix = TraceHeaders.returnPath(message.envelope.sender) + TraceHeaders.deliveredTo(recipient.address)
        let queue = self.queue
        let hostname = settings.hostname
        do {
            let name = try await threadPool.runIfActive {
                let reader = try queue.readData(message.id)
                return try maildir.deliver(prefix: prefix, hostname: hostname) {
                    try reader.next(maxBytes: 256 * 1024)
                }
            }
            return DeliveryOutcome(kind: .delivered, status: "2.0.0", text: "new/\(name)", relay: "maildir")
        } catch {
            return DeliveryOutcome(
                kind: .deferred, status: "4.3.0", text: "maildir delivery failed: \(error)", relay: "maildir")
        }
    }

    /// The Maildir of a local part: the mailbox itself, else its `+detail` base (SPEC §1.3).
    /// Names that could leave the mail root never come back.
    func mailboxName(localPart: String, domain: String) -> String? {
        var candidates = [localPart]
        if let plus = localPart.firstIndex(of: "+"), plus != localPart.startIndex {
            candidates.append(String(localPart[..<plus]))
        }
        return candidates.first { name in
            !name.contains("/") && name != "." && name != ".." && directory.isMailbox(localPart: name, domain: domain)
        }
    }

    /// `1.234`: seconds with milliseconds, without Foundation's `String(format:)`, which costs
    /// more than the rest of a log line.
    static func seconds(_ interval: TimeInterval) -> String {
        let milliseconds = max(0, Int((interval * 1000).rounded()))
        let fraction = milliseconds % 1000
        return "\(milliseconds / 1000)." + (fraction < 10 ? "00" : fraction < 100 ? "0" : "") + "\(fraction)"
    }

    func retryDelay(afterAttempt attempts: Int) -> TimeInterval {
        Self.timeInterval(settings.retry[min(max(attempts - 1, 0), settings.retry.count - 1)])
    }

    static func timeInterval(_ duration: Duration) -> TimeInterval {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
