import Foundation
import Logging
import MailMessage
import MailPolicy
import MailQueue
import NIOCore
import NIOPosix
import Synchronization

/// Takes queued messages to their recipients: local mailboxes now; remote domains stay
/// deferred ("no route yet") until outbound delivery exists. Work comes from two places: the
/// server announces each new message, and a periodic scan of the queue finds everything due
/// (retries, and whatever was pending when Tern last stopped).
public final class DeliveryScheduler: Sendable {
    public struct Settings: Sendable {
        public var hostname: String
        /// `<data_dir>/mail`: Maildirs live at `<root>/<domain>/<user>/` (SPEC §1.3).
        public var mailRoot: String
        /// `[delivery] retry`: the delay before attempt n+1; the last value repeats.
        public var retry: [Duration]
        /// Messages delivered at once.
        public var concurrency: Int
        public var scanInterval: Duration

        public init(
            hostname: String, mailRoot: String, retry: [Duration], concurrency: Int = 8,
            scanInterval: Duration = .seconds(5)
        ) {
            self.hostname = hostname
            self.mailRoot = mailRoot
            self.retry = retry.isEmpty ? [.seconds(60)] : retry
            self.concurrency = max(1, concurrency)
            self.scanInterval = scanInterval
        }
    }

    private let settings: Settings
    private let queue: QueueStore
    private let directory: any LocalRecipientDirectory
    private let threadPool: NIOThreadPool
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
        settings: Settings, queue: QueueStore, directory: any LocalRecipientDirectory, threadPool: NIOThreadPool,
        logger: Logger
    ) {
        self.settings = settings
        self.queue = queue
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

    /// One pass over a message: every recipient that is due gets one attempt. `finished` runs
    /// once what the pass learned is recorded, which may be after this returns: deferrals and a
    /// removal are written without waiting for their sync (losing one in a crash only means an
    /// earlier retry, or a message found fully delivered at the next pass).
    func deliver(_ id: QueueID, finished: @escaping @Sendable () -> Void) async {
        guard let message = queue.message(id), !message.held else { return finished() }
        var logger = self.logger
        logger[metadataKey: "queue_id"] = "\(id)"
        let now = Date()
        var deferrals: [Int: RecipientChange] = [:]
        var final = 0
        for (index, recipient) in message.envelope.recipients.enumerated() {
            if recipient.isFinal { final += 1 }
            let due =
                recipient.status == .pending
                || (recipient.status == .deferred && (recipient.nextAttempt ?? .distantPast) <= now)
            guard due else { continue }
            let outcome = await attempt(message, recipient: recipient)
            let attempts = recipient.attempts + 1
            let delay = Date().timeIntervalSince(message.arrival)
            switch outcome {
            case .delivered(let detail):
                do {
                    // Waited for: a delivery recorded as pending again would be a duplicate.
                    try await queue.update(
                        id, recipient: index, status: .delivered, attempts: attempts, nextAttempt: nil, lastError: nil)
                } catch {
                    logger.error("queue update failed", metadata: ["event": "error", "error": "\(error)"])
                    return finished()
                }
                final += 1
                logger.info(
                    "delivered",
                    metadata: [
                        "event": "delivered", "to": "<\(recipient.address)>", "relay": "maildir",
                        "delay": "\(Self.seconds(delay))", "status": "sent", "detail": "\(detail)",
                    ])
            case .deferred(let reason):
                let next = Date().addingTimeInterval(retryDelay(afterAttempt: attempts))
                deferrals[index] = RecipientChange(
                    status: .deferred, attempts: attempts, nextAttempt: next, lastError: reason)
                logger.info(
                    "deferred",
                    metadata: [
                        "event": "deferred", "to": "<\(recipient.address)>",
                        "delay": "\(Self.seconds(delay))", "status": "deferred", "reason": "\(reason)",
                        "next_attempt": "\(Int(next.timeIntervalSince1970))",
                    ])
            }
        }
        if !deferrals.isEmpty {
            queue.update(id, recipients: deferrals) { [logger] error in
                if let error { logger.error("queue update failed", metadata: ["event": "error", "error": "\(error)"]) }
                finished()
            }
            return
        }
        guard final == message.envelope.recipients.count else { return finished() }
        queue.remove(id) { [logger] error in
            if let error {
                logger.error("queue remove failed", metadata: ["event": "error", "error": "\(error)"])
            } else {
                logger.info("removed", metadata: ["event": "removed"])
            }
            finished()
        }
    }

    enum Outcome {
        case delivered(String)
        case deferred(String)
    }

    private func attempt(_ message: QueuedMessage, recipient: QueuedRecipient) async -> Outcome {
        guard let at = recipient.address.lastIndex(of: "@") else {
            return .deferred("5.1.3 recipient address has no domain")
        }
        let localPart = recipient.address[..<at].lowercased()
        let domain = recipient.address[recipient.address.index(after: at)...].lowercased()
        guard directory.isLocalDomain(domain) else {
            return .deferred("4.4.0 no route yet: outbound delivery is not enabled in this version")
        }
        guard let mailbox = mailboxName(localPart: localPart, domain: domain) else {
            return .deferred("5.1.1 mailbox \(localPart)@\(domain) no longer exists")
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
            return .delivered("new/\(name)")
        } catch {
            return .deferred("4.3.0 maildir delivery failed: \(error)")
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
        let delay = settings.retry[min(max(attempts - 1, 0), settings.retry.count - 1)]
        return Double(delay.components.seconds) + Double(delay.components.attoseconds) / 1e18
    }
}
