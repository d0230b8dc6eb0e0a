import Foundation
import Glibc
import Logging
import NIOCore
import Synchronization

/// Tern's durable queue (SPEC §2.2): an append-only log of records in numbered segments, group
/// committed by one thread with one `fdatasync` per batch.
///
/// Layout of the queue directory:
/// - `lock`: held with `flock` by the process that has the queue open;
/// - `log/NNNNNNNNNNNN.seg`: the log segments, oldest first; the last one is appended to;
/// - `spool/<ID>`: data of messages being received (never synced, removed on open);
/// - `data/<ID>`: data of messages larger than `Options.inlineLimit`, synced before their
///   MESSAGE record is written (smaller messages are inline in their record).
///
/// `commit`, `update`, `hold`, `release` and `remove` return once their record is on stable
/// storage; the in-memory index changes at the same moment, in log order, so what the index
/// shows is exactly what recovery rebuilds after a crash. A message whose recipients are all
/// final stays until the caller (delivery) removes it: the bounce for it may have to be
/// queued first.
public final class QueueStore: @unchecked Sendable {
    public struct Options: Sendable {
        /// A segment past this size is closed and a new one started.
        public var segmentSize: Int
        /// Messages larger than this keep their data in their own file.
        public var inlineLimit: Int
        /// A spool keeps this much in memory before writing to its spool file.
        public var spoolMemoryLimit: Int
        /// Free space `hasSpace` keeps in reserve beyond twice the message size.
        public var reserve: Int
        /// The oldest segment is compacted (its live messages re-appended) once this old.
        public var compactionAge: TimeInterval
        /// Group commit: before a sync, the committer waits up to this long for commits that
        /// have begun but not yet handed over their record (PostgreSQL's commit_delay, applied
        /// only when there are such commits, so a lone session never waits).
        public var groupCommitWindow: TimeInterval
        /// The longest a record nobody waits for (a deferral, a removal) stays unwritten while
        /// no commit comes to take it along.
        public var lazySyncDelay: TimeInterval
        /// The active segment grows by this many zeroed octets at a time, so that a batch's
        /// sync does not also have to write the file's new size (0: append without it).
        public var preallocation: Int
        /// Tests only: added to every sync of the log, to stand for a slow disk.
        var simulatedSyncLatency: TimeInterval = 0

        public init(
            segmentSize: Int = 64 << 20, inlineLimit: Int = 1 << 20, spoolMemoryLimit: Int = 64 << 10,
            reserve: Int = 16 << 20, compactionAge: TimeInterval = 3600, groupCommitWindow: TimeInterval = 0.001,
            lazySyncDelay: TimeInterval = 0.02, preallocation: Int = 1 << 20
        ) {
            self.segmentSize = segmentSize
            self.inlineLimit = inlineLimit
            self.spoolMemoryLimit = spoolMemoryLimit
            self.reserve = reserve
            self.compactionAge = compactionAge
            self.groupCommitWindow = groupCommitWindow
            self.lazySyncDelay = lazySyncDelay
            self.preallocation = preallocation
        }
    }

    let directory: String
    let logDirectory: String
    let spoolDirectory: String
    let dataDirectory: String
    let logger: Logger
    let options: Options
    let lockFD: CInt

    /// Guards everything below up to "committer thread only", and wakes the committer.
    let condition = NSCondition()
    var index: [QueueID: IndexEntry] = [:]
    /// Segment numbers, oldest first; the last is the active segment.
    var segmentNumbers: [UInt64] = []
    /// Per segment: how many messages in the index have their MESSAGE record there.
    var liveCounts: [UInt64: Int] = [:]
    /// Per segment: when it was started (its modification time after a restart).
    var segmentCreated: [UInt64: Date] = [:]
    var pending: [PendingRecord] = []
    /// Commits that have begun but not yet appended their record (see `groupCommitWindow`).
    var preparingCommits = 0
    /// Records in `pending` that someone waits for; lazy ones alone do not start a sync.
    var urgentPending = 0
    /// When the oldest lazy record in `pending` arrived.
    var oldestLazyRecord: Date?
    var compactionWaiters: [CheckedContinuation<Void, any Error>] = []
    var stopping = false
    var isClosed = false
    var counters = QueueStatistics()
    /// `hasSpace`'s last `statvfs`: free octets, and when (`DispatchTime` nanoseconds).
    let spaceSample = Mutex<(free: UInt64, taken: UInt64)?>(nil)

    // Committer thread only (and `open` before it starts, `close` after it ends).
    var activeFD: CInt = -1
    var activeNumber: UInt64 = 0
    /// Where the next record goes: the end of the last record known to be good.
    var activeEnd: Int64 = 0
    /// The active segment file's size: past `activeEnd` it holds preallocated zeros.
    var allocatedEnd: Int64 = 0
    /// When zeroing ahead last failed (see `preallocate`).
    var preallocationFailed: Date?
    var batchBuffer = ByteBuffer()
    /// The active segment's tail could not be cut back after a failed write: start a new one.
    var needsRotation = false
    var committerStarted = false
    let committerFinished = DispatchSemaphore(value: 0)

    init(directory: String, logger: Logger, options: Options, lockFD: CInt) {
        self.directory = directory
        self.logDirectory = directory + "/log"
        self.spoolDirectory = directory + "/spool"
        self.dataDirectory = directory + "/data"
        self.logger = logger
        self.options = options
        self.lockFD = lockFD
    }

    /// Opens (creating if needed) the queue in `directory`, takes its lock and recovers its
    /// state from the log. Throws `QueueError.locked` if another process has it open.
    public static func open(directory: String, logger: Logger, options: Options = .init()) throws -> QueueStore {
        try SystemCalls.makeDirectories(directory)
        for path in [directory + "/log", directory + "/spool", directory + "/data"] {
            try SystemCalls.makeDirectory(path)
        }
        try SystemCalls.syncDirectory(directory)
        let lockPath = directory + "/lock"
        let lockFD = try SystemCalls.open(lockPath, O_RDWR | O_CREAT, mode: 0o644)
        guard flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            var holder = ByteBuffer()
            try? SystemCalls.read(lockFD, into: &holder, count: 32, at: 0, path: lockPath)
            Glibc.close(lockFD)
            guard code == EWOULDBLOCK else { throw QueueError.storage(errno: code, "lock \(lockPath)") }
            let pid = holder.readString(length: holder.readableBytes)?.trimmingCharacters(in: .whitespacesAndNewlines)
            throw QueueError.locked(
                "queue \(directory) is in use by another process" + (pid.map { $0.isEmpty ? "" : " (pid \($0))" } ?? "")
            )
        }
        // Record who holds the lock, for the error message above.
        _ = ftruncate(lockFD, 0)
        let pid = "\(getpid())\n"
        _ = pid.withCString { pwrite(lockFD, $0, strlen($0), 0) }

        let store = QueueStore(directory: directory, logger: logger, options: options, lockFD: lockFD)
        do {
            try store.recover()
        } catch {
            if store.activeFD >= 0 { Glibc.close(store.activeFD) }
            Glibc.close(lockFD)
            throw error
        }
        store.startCommitter()
        return store
    }

    /// Stops the committer after it has written everything already submitted, and releases the
    /// lock. Later operations throw `QueueError.closed`.
    public func close() {
        condition.lock()
        if isClosed {
            condition.unlock()
            return
        }
        isClosed = true
        stopping = true
        condition.broadcast()
        condition.unlock()
        if committerStarted { committerFinished.wait() }
        if activeFD >= 0 { Glibc.close(activeFD) }
        activeFD = -1
        flock(lockFD, LOCK_UN)
        Glibc.close(lockFD)
    }

    // MARK: Receiving

    /// Starts receiving a message.
    public func makeSpool(id: QueueID = .generate()) throws -> MessageSpool {
        try condition.withLock { if isClosed { throw QueueError.closed } }
        return MessageSpool(id: id, path: "\(spoolDirectory)/\(id)", memoryLimit: options.spoolMemoryLimit)
    }

    /// Puts the spooled message with its envelope into the queue. On return it is on stable
    /// storage; on a throw it is not queued (the spool may then only be discarded).
    public func commit(_ spool: MessageSpool, envelope: QueueEnvelope) async throws -> QueuedMessage {
        try await withCheckedThrowingContinuation { continuation in
            commit(spool, envelope: envelope) { continuation.resume(with: $0) }
        }
    }

    /// Puts the spooled message with its envelope into the queue, and calls `completion` once it
    /// is on stable storage (or is not queued, on failure). The completion runs on the
    /// committer's thread and must not block: the server hands it straight to its event loop,
    /// which spares every message two hops through the concurrency pool.
    ///
    /// A message small enough to go inline is encoded on the caller's thread; a larger one is
    /// moved to `data/` on a dispatch queue first (its two syncs take milliseconds).
    public func commit(
        _ spool: MessageSpool, envelope: QueueEnvelope,
        completion: @escaping @Sendable (Result<QueuedMessage, any Error>) -> Void
    ) {
        condition.withLock { preparingCommits += 1 }
        var envelope = envelope
        for index in envelope.recipients.indices {
            envelope.recipients[index].nextAttempt = QueueTime.rounded(envelope.recipients[index].nextAttempt)
        }
        let arrival = QueueTime.microseconds(Date())
        let size = spool.byteCount
        let record = LogRecord.message(
            MessageRecord(
                id: spool.id, arrival: arrival, size: size, held: false, dataInFile: size > options.inlineLimit,
                envelope: envelope))
        let queued = QueuedMessage(
            id: spool.id, arrival: QueueTime.date(arrival), size: size, envelope: envelope, held: false)
        let finish: @Sendable (QueueError?) -> Void = { error in
            if let error {
                if size > self.options.inlineLimit { unlink(self.dataPath(spool.id)) }
                completion(.failure(error))
            } else {
                spool.committed()
                completion(.success(queued))
            }
        }
        guard size > options.inlineLimit else {
            var bytes = ByteBuffer()
            do {
                let data = try spool.contents()
                bytes.reserveCapacity(size + 512)
                record.encode(into: &bytes, inlineData: data)
            } catch {
                abandonPreparedCommit()
                return completion(.failure(error))
            }
            return enqueue(bytes, record, fromPreparedCommit: true, completion: .callback(finish))
        }
        let target = dataPath(spool.id)
        let directory = dataDirectory
        DispatchQueue.global().async {
            do {
                try spool.move(to: target)
                try SystemCalls.syncDirectory(directory)
            } catch {
                unlink(target)
                self.abandonPreparedCommit()
                return completion(.failure(error))
            }
            var bytes = ByteBuffer()
            record.encode(into: &bytes)
            self.enqueue(bytes, record, fromPreparedCommit: true, completion: .callback(finish))
        }
    }

    /// A commit that began (see `groupCommitWindow`) will not hand over a record after all.
    private func abandonPreparedCommit() {
        condition.withLock {
            preparingCommits -= 1
            condition.signal()
        }
    }

    // MARK: Delivery state

    /// Records new states for several recipients of a message in one record.
    public func update(_ id: QueueID, recipients changes: [Int: RecipientChange]) async throws {
        try await append(stateRecord(id, recipients: changes))
    }

    /// Records new states for several recipients of a message in one record, without waiting:
    /// `completion` runs on the committer's thread once the record is durable (with nil) or its
    /// batch failed, and must not block. A delivery pass uses this so that its worker goes on
    /// at once; until the completion, the message counts as still in its hands. The record
    /// takes a ride with the next commit's sync (see `Options.lazySyncDelay`).
    public func update(
        _ id: QueueID, recipients changes: [Int: RecipientChange],
        completion: @escaping @Sendable (QueueError?) -> Void
    ) {
        do throws(QueueError) {
            let record = try stateRecord(id, recipients: changes)
            var bytes = ByteBuffer()
            record.encode(into: &bytes)
            enqueue(bytes, record, fromPreparedCommit: false, urgent: false, completion: .callback(completion))
        } catch {
            completion(error)
        }
    }

    private func stateRecord(_ id: QueueID, recipients changes: [Int: RecipientChange]) throws(QueueError) -> LogRecord
    {
        let count = condition.withLock { index[id]?.envelope.recipients.count }
        guard let count else { throw QueueError.unknownMessage(id) }
        if let bad = changes.keys.first(where: { $0 < 0 || $0 >= count }) {
            throw QueueError.unknownRecipient(id, index: bad)
        }
        let states = changes.sorted { $0.key < $1.key }.map { index, change in
            var change = change
            change.nextAttempt = QueueTime.rounded(change.nextAttempt)
            return RecipientStateRecord(index: index, change: change)
        }
        return .state(id, states)
    }

    /// Records the new state of one recipient.
    public func update(_ id: QueueID, recipient index: Int, _ change: RecipientChange) async throws {
        try await update(id, recipients: [index: change])
    }

    /// Records the new state of one recipient.
    public func update(
        _ id: QueueID, recipient index: Int, status: RecipientStatus, attempts: Int, nextAttempt: Date?,
        lastError: String?
    ) async throws {
        let change = RecipientChange(status: status, attempts: attempts, nextAttempt: nextAttempt, lastError: lastError)
        try await update(id, recipients: [index: change])
    }

    /// Keeps the message from delivery until `release`.
    public func hold(_ id: QueueID) async throws {
        try requireMessage(id)
        try await append(.hold(id))
    }

    public func release(_ id: QueueID) async throws {
        try requireMessage(id)
        try await append(.release(id))
    }

    /// Records that the sender has had its delay warning (`delay_warning` is sent once).
    public func markDelayWarned(_ id: QueueID) async throws {
        try requireMessage(id)
        try await append(.delayWarned(id))
    }

    /// Removes the message for good (all recipients final, or deleted by an administrator).
    public func remove(_ id: QueueID) async throws {
        try requireMessage(id)
        try await append(.remove(id))
    }

    /// Removes the message for good without waiting; `completion` as for `update`.
    public func remove(_ id: QueueID, completion: @escaping @Sendable (QueueError?) -> Void) {
        guard condition.withLock({ index[id] != nil }) else { return completion(.unknownMessage(id)) }
        var bytes = ByteBuffer()
        LogRecord.remove(id).encode(into: &bytes)
        enqueue(bytes, .remove(id), fromPreparedCommit: false, urgent: false, completion: .callback(completion))
    }

    private func requireMessage(_ id: QueueID) throws {
        guard condition.withLock({ index[id] != nil }) else { throw QueueError.unknownMessage(id) }
    }

    /// Re-appends the live messages of the oldest segment (whatever its age) so that it can be
    /// deleted. The committer does this by itself for segments older than `compactionAge`.
    public func compact() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            condition.lock()
            defer { condition.unlock() }
            guard !isClosed else { return continuation.resume(throwing: QueueError.closed) }
            compactionWaiters.append(continuation)
            condition.signal()
        }
    }

    // MARK: Reading

    public func message(_ id: QueueID) -> QueuedMessage? {
        condition.withLock { index[id].map { $0.message(id) } }
    }

    /// A snapshot of every queued message, oldest first.
    public func messages() -> [QueuedMessage] {
        let all = condition.withLock { index.map { $0.value.message($0.key) } }
        return all.sorted { $0.id < $1.id }
    }

    /// Up to `limit` messages, oldest first, that are not held and have a recipient that is
    /// pending, or deferred with its next attempt at or before `now`; and messages whose
    /// recipients are all final, which are due for removal (a removal is written without
    /// waiting for its sync, so a crash can leave one behind).
    public func due(at now: Date, limit: Int) -> [QueueID] {
        let ids = condition.withLock {
            index.compactMap { id, entry -> QueueID? in
                guard !entry.held else { return nil }
                let recipients = entry.envelope.recipients
                let due = recipients.contains { $0.isDue(at: now) } || recipients.allSatisfy(\.isFinal)
                return due ? id : nil
            }
        }
        return Array(ids.sorted().prefix(limit))
    }

    /// Opens the message's data for reading in chunks.
    public func readData(_ id: QueueID) throws -> MessageDataReader {
        // Under the lock: the segment or file cannot be deleted between lookup and open.
        try condition.withLock {
            guard let entry = index[id] else { throw QueueError.unknownMessage(id) }
            let path = entry.dataInFile ? dataPath(id) : segmentPath(entry.segment)
            let fd = try SystemCalls.open(path, O_RDONLY)
            return MessageDataReader(fd: fd, path: path, start: max(0, entry.dataOffset), size: entry.size)
        }
    }

    /// Whether the queue's file system has room for a message of `size` octets: twice the
    /// size (spool file, then log record or data file) plus `Options.reserve`, so that state
    /// updates and removals still fit when new mail is refused (SPEC §2.2: 452 4.3.1).
    ///
    /// Every MAIL asks, so a `statvfs` result is reused for up to 100 ms, but only while it
    /// leaves at least 64 MiB beyond what is needed; closer to full, every call looks again.
    public func hasSpace(forMessageOfSize size: Int) -> Bool {
        let needed = UInt64(max(0, size)) * 2 + UInt64(max(0, options.reserve))
        let now = DispatchTime.now().uptimeNanoseconds
        let cached = spaceSample.withLock { $0 }
        if let cached, now &- cached.taken < 100_000_000, cached.free >= needed + 64 << 20 { return true }
        var info = statvfs()
        guard statvfs(directory, &info) == 0 else { return false }
        let free = UInt64(info.f_bavail) * UInt64(info.f_frsize)
        spaceSample.withLock { $0 = (free, now) }
        return free >= needed
    }

    public var statistics: QueueStatistics {
        condition.withLock {
            var statistics = counters
            statistics.segments = segmentNumbers.count
            statistics.messages = index.count
            return statistics
        }
    }

    // MARK: Paths

    func dataPath(_ id: QueueID) -> String { "\(dataDirectory)/\(id)" }

    func segmentPath(_ number: UInt64) -> String {
        let digits = String(number)
        return logDirectory + "/" + String(repeating: "0", count: max(0, 12 - digits.count)) + digits + ".seg"
    }

    static func segmentNumber(_ name: String) -> UInt64? {
        guard name.hasSuffix(".seg") else { return nil }
        return UInt64(name.dropLast(4))
    }
}

/// Counters since the store was opened (segments and messages: current numbers).
public struct QueueStatistics: Sendable, Hashable {
    /// Messages committed.
    public var commits = 0
    /// Log records written (messages, state changes, holds, removals, compaction copies).
    public var records = 0
    /// `fdatasync` calls on the log: one per batch.
    public var syncs = 0
    public var bytesWritten = 0
    /// Batches that failed with a storage error.
    public var failedBatches = 0
    public var segments = 0
    public var messages = 0

    public init() {}
}

/// What the index keeps per message. Apart from the strings of the envelope this is about
/// 60 octets; with a typical envelope (two short addresses, client address, HELO name) a
/// message costs some 300–500 octets of memory.
struct IndexEntry {
    /// Microseconds since 1970.
    var arrival: Int64
    var size: Int
    var held: Bool
    var delayWarned = false
    var dataInFile: Bool
    /// The segment holding the message's current MESSAGE record.
    var segment: UInt64
    /// Offset of the inline data in that segment; -1 when the data is in its own file.
    var dataOffset: Int64
    var envelope: QueueEnvelope

    func message(_ id: QueueID) -> QueuedMessage {
        QueuedMessage(
            id: id, arrival: QueueTime.date(arrival), size: size, envelope: envelope, held: held,
            delayWarned: delayWarned)
    }
}

/// A record waiting for the committer.
struct PendingRecord: Sendable {
    /// Who learns that the record is durable, or that its batch failed.
    enum Completion: Sendable {
        case continuation(CheckedContinuation<Void, any Error>)
        case callback(@Sendable (QueueError?) -> Void)

        func finish(_ error: QueueError?) {
            switch self {
            case .continuation(let continuation):
                if let error { continuation.resume(throwing: error) } else { continuation.resume() }
            case .callback(let callback):
                callback(error)
            }
        }
    }

    var bytes: ByteBuffer
    var record: LogRecord
    /// Nil for the committer's own compaction records.
    var completion: Completion?
}
