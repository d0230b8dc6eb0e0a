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
///   MESSAGE record is written (smaller messages are inline in their record);
/// - `index`: where each live message's records are and when it is next due (`QueueIndex`),
///   rebuilt from the log at every open.
///
/// `commit`, `update`, `hold`, `release` and `remove` return once their record is on stable
/// storage; the index changes at the same moment, in log order, so what the index shows is
/// exactly what recovery rebuilds after a crash. A message whose recipients are all final
/// stays until the caller (delivery) removes it: the bounce for it may have to be queued first.
///
/// Memory does not grow with the queue (SPEC §2.2): envelopes are read from the log when
/// asked for, and the index is a file. What is in memory is per segment or per record in
/// flight.
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
    /// The live messages; made by `recover`.
    var index: QueueIndex!
    /// Read-only descriptors of segments that messages were read from, closed with the segment.
    var segmentReaders: [UInt64: CInt] = [:]
    /// The recipient states of STATE records handed to the committer and not yet applied: the
    /// next update of the same message builds on them rather than on the index.
    var unappliedStates: [QueueID: UnappliedState] = [:]
    var stateGenerations = 0
    /// No message is due before this (microseconds since 1970), so `due` need not look.
    var dueHint: Int64 = 0
    /// The index could not be written after its batch was durable; until a restart rebuilds
    /// it, the store refuses work.
    var indexFailure: QueueError?
    /// The newest ID recovery saw.
    var newestRecovered: QueueID?
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
        condition.withLock {
            for fd in segmentReaders.values { Glibc.close(fd) }
            segmentReaders = [:]
            index?.close()
            index = nil
        }
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
    public func commit(_ spool: MessageSpool, envelope: QueueEnvelope, held: Bool = false) async throws -> QueuedMessage
    {
        try await withCheckedThrowingContinuation { continuation in
            commit(spool, envelope: envelope, held: held) { continuation.resume(with: $0) }
        }
    }

    /// Puts the spooled message with its envelope into the queue, and calls `completion` once it
    /// is on stable storage (or is not queued, on failure). The completion runs on the
    /// committer's thread and must not block: the server hands it straight to its event loop,
    /// which spares every message two hops through the concurrency pool.
    ///
    /// A message small enough to go inline is encoded on the caller's thread; a larger one is
    /// moved to `data/` on a dispatch queue first (its two syncs take milliseconds). A `held`
    /// message (quarantined) stays in the queue until `release`.
    public func commit(
        _ spool: MessageSpool, envelope: QueueEnvelope, held: Bool = false,
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
                id: spool.id, arrival: arrival, size: size, held: held, dataInFile: size > options.inlineLimit,
                envelope: envelope))
        let queued = QueuedMessage(
            id: spool.id, arrival: QueueTime.date(arrival), size: size, envelope: envelope, held: held)
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
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            enqueueState(id, changes, urgent: true, completion: .continuation(continuation))
        }
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
        enqueueState(id, changes, urgent: false, completion: .callback(completion))
    }

    /// Merges the changes into the message's latest recipient states (those of a STATE record
    /// still on its way, if any, else the index's) and hands a STATE record with all of them to
    /// the committer, all under the lock, so that concurrent updates of one message each build
    /// on the one before, in log order.
    private func enqueueState(
        _ id: QueueID, _ changes: [Int: RecipientChange], urgent: Bool, completion: PendingRecord.Completion
    ) {
        condition.lock()
        do throws(QueueError) {
            guard !isClosed else { throw .closed }
            if let indexFailure { throw indexFailure }
            var states: [RecipientChange]
            if let unapplied = unappliedStates[id] {
                states = unapplied.recipients
            } else {
                guard let entry = try lookup(id) else { throw .unknownMessage(id) }
                states = try readMessage(entry).envelope.recipients.map {
                    RecipientChange(
                        status: $0.status, attempts: $0.attempts, nextAttempt: $0.nextAttempt, lastError: $0.lastError)
                }
            }
            if let bad = changes.keys.first(where: { $0 < 0 || $0 >= states.count }) {
                throw .unknownRecipient(id, index: bad)
            }
            for (position, change) in changes {
                states[position] = change
                states[position].nextAttempt = QueueTime.rounded(change.nextAttempt)
            }
            stateGenerations += 1
            unappliedStates[id] = UnappliedState(generation: stateGenerations, recipients: states)
            let record = LogRecord.state(
                id, states.enumerated().map { RecipientStateRecord(index: $0.offset, change: $0.element) })
            var bytes = ByteBuffer()
            record.encode(into: &bytes)
            pending.append(
                PendingRecord(
                    bytes: bytes, record: record, completion: completion, stateGeneration: stateGenerations))
            noteArrival(urgent: urgent)
            condition.unlock()
        } catch {
            condition.unlock()
            completion.finish(error)
        }
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
        do {
            try requireMessage(id)
        } catch {
            return completion(error as? QueueError ?? .unknownMessage(id))
        }
        var bytes = ByteBuffer()
        LogRecord.remove(id).encode(into: &bytes)
        enqueue(bytes, .remove(id), fromPreparedCommit: false, urgent: false, completion: .callback(completion))
    }

    private func requireMessage(_ id: QueueID) throws {
        guard try condition.withLock({ try lookup(id) }) != nil else { throw QueueError.unknownMessage(id) }
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

    /// The message with its envelope and its recipients' current state, read from the log; nil
    /// if it is not queued (or cannot be read: that is logged).
    public func message(_ id: QueueID) -> QueuedMessage? {
        do {
            return try condition.withLock { try lookup(id).map(readMessage) }
        } catch {
            logger.error("queued message unreadable", metadata: ["queue_id": "\(id)", "error": "\(error)"])
            return nil
        }
    }

    /// Every queued message, oldest first: the whole queue in memory at once, for the
    /// administrator's listing and for tests. Delivery uses `due` and `message`.
    public func messages() -> [QueuedMessage] {
        var entries: [IndexEntry] = []
        try? forEachEntry { entries.append($0) }
        entries.sort { $0.id < $1.id }
        return entries.compactMap { entry in message(entry.id) }
    }

    /// Up to `limit` messages, oldest first, that are not held and have a recipient that is
    /// pending, or deferred with its next attempt at or before `now`; and messages whose
    /// recipients are all final, which are due for removal (a removal is written without
    /// waiting for its sync, so a crash can leave one behind).
    ///
    /// Reads the whole index unless nothing can be due yet (the store knows the earliest time
    /// anything is due), and keeps no more than about `2 * limit` IDs in memory while it does.
    public func due(at date: Date, limit: Int) -> [QueueID] {
        guard limit > 0 else { return [] }
        let now = QueueTime.microseconds(date)
        let skip = condition.withLock {
            guard dueHint <= now else { return true }
            // Entries applied during the scan lower the hint again themselves.
            dueHint = .max
            return false
        }
        guard !skip else { return [] }
        var found: [QueueID] = []
        var earliest = Int64.max
        do {
            try forEachEntry { entry in
                guard !entry.held else { return }
                earliest = min(earliest, entry.isFinal ? 0 : entry.dueAt)
                guard entry.isDue(at: now) else { return }
                found.append(entry.id)
                if found.count >= 2 * limit {
                    found.sort()
                    found.removeLast(found.count - limit)
                }
            }
        } catch {
            earliest = 0
            logger.error("queue index unreadable", metadata: ["event": "error", "error": "\(error)"])
        }
        condition.withLock { dueHint = min(dueHint, earliest) }
        return Array(Set(found).sorted().prefix(limit))
    }

    /// Calls `body` with every index entry, taking the lock for a part of the index at a time so
    /// that commits are not held up for the whole of a large queue. An entry that moves while
    /// this runs (the index grew) may be seen twice or not at all.
    func forEachEntry(_ body: (IndexEntry) throws -> Void) throws {
        var position = 0
        while true {
            let more: Bool = try condition.withLock {
                guard let index, position < index.capacity else { return false }
                let end = min(index.capacity, position + 8192)
                try index.forEach(slots: position..<end) { entry in
                    try body(entry)
                    return true
                }
                position = end
                return true
            }
            if !more { return }
        }
    }

    /// Opens the message's data for reading in chunks.
    public func readData(_ id: QueueID) throws -> MessageDataReader {
        // Under the lock: the segment or file cannot be deleted between lookup and open.
        try condition.withLock {
            guard let entry = try lookup(id) else { throw QueueError.unknownMessage(id) }
            let path = entry.dataInFile ? dataPath(id) : segmentPath(entry.segment)
            let fd = try SystemCalls.open(path, O_RDONLY)
            return MessageDataReader(fd: fd, path: path, start: max(0, entry.dataOffset), size: entry.size)
        }
    }

    // MARK: Index (under the lock)

    func lookup(_ id: QueueID) throws(QueueError) -> IndexEntry? {
        guard let index else { throw .closed }
        do {
            return try index.lookup(id)
        } catch {
            throw error as? QueueError ?? .storage(errno: EIO, "\(error)")
        }
    }

    /// The message an index entry describes: its MESSAGE record's envelope with the recipient
    /// states of its latest STATE record.
    func readMessage(_ entry: IndexEntry) throws(QueueError) -> QueuedMessage {
        let head = try readLog(segment: entry.segment, offset: entry.offset, length: entry.headLength)
        var record: MessageRecord
        do {
            record = try LogRecord.decodeMessageHead(head)
        } catch {
            throw .corrupt("\(segmentPath(entry.segment)) at \(entry.offset): not the MESSAGE record of \(entry.id)")
        }
        if entry.stateSegment != 0 {
            let bytes = try readLog(segment: entry.stateSegment, offset: entry.stateOffset, length: entry.stateLength)
            guard case .record(.state(let id, let states), _) = LogRecord.decode(bytes, at: 0), id == entry.id else {
                throw .corrupt(
                    "\(segmentPath(entry.stateSegment)) at \(entry.stateOffset): not the STATE record of \(entry.id)")
            }
            for state in states where state.index < record.envelope.recipients.count {
                record.envelope.recipients[state.index].status = state.change.status
                record.envelope.recipients[state.index].attempts = state.change.attempts
                record.envelope.recipients[state.index].nextAttempt = state.change.nextAttempt
                record.envelope.recipients[state.index].lastError = state.change.lastError
            }
        }
        return QueuedMessage(
            id: entry.id, arrival: QueueTime.date(entry.arrival), size: entry.size, envelope: record.envelope,
            held: entry.held, delayWarned: entry.delayWarned)
    }

    private func readLog(segment: UInt64, offset: Int64, length: Int) throws(QueueError) -> ByteBuffer {
        let path = segmentPath(segment)
        do {
            let fd: CInt
            if let open = segmentReaders[segment] {
                fd = open
            } else {
                fd = try SystemCalls.open(path, O_RDONLY)
                segmentReaders[segment] = fd
            }
            var buffer = ByteBuffer()
            try SystemCalls.read(fd, into: &buffer, count: length, at: offset, path: path)
            guard buffer.readableBytes == length else { throw QueueError.corrupt("\(path) ends at a record") }
            return buffer
        } catch {
            throw error as? QueueError ?? .storage(errno: EIO, "\(error)")
        }
    }

    /// Lowers `dueHint` for an entry just written (under the lock).
    func noteDue(_ entry: IndexEntry) {
        guard !entry.held else { return }
        dueHint = min(dueHint, entry.isFinal ? 0 : entry.dueAt)
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
            statistics.messages = index?.count ?? 0
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

/// The recipient states of a STATE record not yet applied (see `QueueStore.unappliedStates`).
struct UnappliedState {
    var generation: Int
    var recipients: [RecipientChange]
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
    /// For a STATE record: its entry in `QueueStore.unappliedStates`.
    var stateGeneration: Int? = nil
}
