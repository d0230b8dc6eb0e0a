import Foundation
import Glibc
import Logging
import NIOCore

// The log: group commit, segments, recovery and compaction.
extension QueueStore {
    // MARK: Group commit

    /// Hands a record to the committer and waits until it is durable.
    func append(_ record: LogRecord) async throws {
        var bytes = ByteBuffer()
        record.encode(into: &bytes)
        try await append(bytes, record)
    }

    func append(_ bytes: ByteBuffer, _ record: LogRecord) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            enqueue(bytes, record, fromPreparedCommit: false, completion: .continuation(continuation))
        }
    }

    /// Hands a record to the committer; `completion` learns when it is durable. A record that
    /// is not `urgent` (nobody waits for it: a deferral, a removal) does not start a sync by
    /// itself: it rides with the next urgent record's, or is synced `Options.lazySyncDelay`
    /// after it arrived, whichever is first.
    func enqueue(
        _ bytes: ByteBuffer, _ record: LogRecord, fromPreparedCommit: Bool, urgent: Bool = true,
        completion: PendingRecord.Completion
    ) {
        condition.lock()
        if fromPreparedCommit { preparingCommits -= 1 }
        if let failure = isClosed ? .closed : indexFailure {
            condition.signal()
            condition.unlock()
            return completion.finish(failure)
        }
        pending.append(PendingRecord(bytes: bytes, record: record, completion: completion))
        noteArrival(urgent: urgent)
        condition.unlock()
    }

    /// Wakes the committer for a record just added to `pending` (under the lock).
    func noteArrival(urgent: Bool) {
        if urgent {
            urgentPending += 1
            condition.signal()
        } else if oldestLazyRecord == nil {
            oldestLazyRecord = Date()
            condition.signal()  // the committer's wait gets a deadline
        }
    }

    func startCommitter() {
        committerStarted = true
        let thread = Thread { [self] in runCommitter() }
        thread.name = "tern-queue-committer"
        thread.start()
    }

    /// The committer: takes everything that is waiting, writes it with one `pwrite` and one
    /// `fdatasync`, then releases all the waiters. While it syncs, the next batch gathers, so the
    /// more sessions commit at once the more records share each sync.
    private func runCommitter() {
        var batch: [PendingRecord] = []
        var lastCompactionCheck = Date()
        while true {
            condition.lock()
            while urgentPending == 0 && compactionWaiters.isEmpty && !stopping {
                // Nothing urgent: sleep (5 s at most, for the compaction check below), or until
                // the oldest lazy record is due.
                let deadline = oldestLazyRecord.map { $0.addingTimeInterval(options.lazySyncDelay) }
                if !condition.wait(until: deadline ?? Date(timeIntervalSinceNow: 5)) { break }
            }
            // Group commit: other sessions have begun committing and are about to append.
            // Waiting a moment for them turns many small syncs into one; with nobody else
            // committing (a lone session) the sync starts at once.
            if preparingCommits > 0 && !pending.isEmpty && !stopping {
                let deadline = Date(timeIntervalSinceNow: options.groupCommitWindow)
                while preparingCommits > 0 && !stopping && condition.wait(until: deadline) {}
            }
            swap(&batch, &pending)
            urgentPending = 0
            oldestLazyRecord = nil
            let waiters = compactionWaiters
            compactionWaiters = []
            let stop = stopping && batch.isEmpty && waiters.isEmpty
            condition.unlock()
            if stop { break }

            if !batch.isEmpty {
                let error = commitBatch(batch)
                for record in batch { record.completion?.finish(error) }
                batch.removeAll(keepingCapacity: true)
            }
            if !waiters.isEmpty {
                do {
                    try compactOldest(force: true)
                    for waiter in waiters { waiter.resume() }
                } catch {
                    for waiter in waiters { waiter.resume(throwing: error) }
                }
            } else if -lastCompactionCheck.timeIntervalSinceNow >= 1 {
                lastCompactionCheck = Date()
                do {
                    try compactOldest(force: false)
                } catch {
                    logger.error("queue compaction failed", metadata: ["event": "error", "error": "\(error)"])
                }
            }
        }
        committerFinished.signal()
    }

    /// Writes and syncs one batch, then applies it to the index. Returns the storage error if
    /// the batch failed: then none of it counts, and the segment is cut back to where it was.
    private func commitBatch(_ batch: [PendingRecord]) -> QueueError? {
        var starts: [Int64] = []
        starts.reserveCapacity(batch.count)
        do {
            // Room in the index first: once the batch is durable, applying it must not fail.
            let messages = batch.reduce(0) { count, pending in
                if case .message = pending.record { return count + 1 }
                return count
            }
            try condition.withLock { try index.reserve(additional: messages) }
            try rotateIfNeeded()
            batchBuffer.clear()
            for record in batch {
                starts.append(activeEnd + Int64(batchBuffer.writerIndex))
                batchBuffer.writeImmutableBuffer(record.bytes)
            }
            let path = segmentPath(activeNumber)
            preallocate(through: activeEnd + Int64(batchBuffer.readableBytes))
            try SystemCalls.write(activeFD, batchBuffer, at: activeEnd, path: path)
            try SystemCalls.dataSync(activeFD, path: path)
            if options.simulatedSyncLatency > 0 { Thread.sleep(forTimeInterval: options.simulatedSyncLatency) }
        } catch {
            let failure = error as? QueueError ?? .storage(errno: EIO, "\(error)")
            // Whatever part of the batch reached the file must not come back at recovery, and the
            // next batch must start at a record boundary.
            do {
                try SystemCalls.truncate(activeFD, to: activeEnd, path: segmentPath(activeNumber))
                allocatedEnd = activeEnd
            } catch {
                needsRotation = true
            }
            if batchBuffer.capacity > 16 << 20 { batchBuffer = ByteBuffer() }
            condition.withLock {
                counters.failedBatches += 1
                for record in batch { forgetUnappliedState(record) }
            }
            logger.error(
                "queue write failed", metadata: ["event": "error", "error": "\(failure)", "records": "\(batch.count)"])
            return failure
        }
        let segment = activeNumber
        activeEnd += Int64(batchBuffer.readableBytes)
        allocatedEnd = max(allocatedEnd, activeEnd)
        var removedFiles: [String] = []
        let deletedSegments: Bool = condition.withLock {
            for (position, record) in batch.enumerated() {
                forgetUnappliedState(record)
                do {
                    try apply(
                        record.record, segment: segment, offset: starts[position], length: record.bytes.readableBytes,
                        removedFiles: &removedFiles)
                } catch {
                    // The records are durable, so their writers hear of success; the index no
                    // longer matches the log, and only a restart (which rebuilds it) helps.
                    if indexFailure == nil {
                        logger.critical(
                            "queue index write failed; the queue refuses work until Tern restarts",
                            metadata: ["event": "error", "error": "\(error)"])
                    }
                    indexFailure = error as? QueueError ?? .storage(errno: EIO, "\(error)")
                }
                if case .message = record.record, record.completion != nil { counters.commits += 1 }
            }
            counters.records += batch.count
            counters.syncs += 1
            counters.bytesWritten += batchBuffer.readableBytes
            return deleteObsoleteSegments()
        }
        // A batch of large inline messages should not pin its buffer forever.
        if batchBuffer.capacity > 16 << 20 { batchBuffer = ByteBuffer() }
        for path in removedFiles { unlink(path) }
        if deletedSegments { try? SystemCalls.syncDirectory(logDirectory) }
        return nil
    }

    /// Makes sure the active segment's file reaches `end`, extending it with written zeros in
    /// steps of `Options.preallocation`. Appending inside a file of fixed size changes no
    /// metadata, so the `fdatasync` of a batch writes the data alone; appending at the end of
    /// the file would make every sync write the inode too (the size changed). PostgreSQL zeroes
    /// its WAL segments for the same reason. Recovery reads an all-zero rest of a segment as its
    /// end.
    ///
    /// Best effort: if the zeros do not fit (a nearly full disk), the file is cut back and the
    /// batch appends as it would without preallocation, so a full disk refuses exactly what does
    /// not fit.
    private func preallocate(through end: Int64) {
        guard options.preallocation > 0, end > allocatedEnd else { return }
        // After a failure, appending goes on without zeros for a while rather than writing
        // (and cutting off) what little space is left before every batch.
        if let failed = preallocationFailed, -failed.timeIntervalSinceNow < 10 { return }
        let step = Int64(options.preallocation)
        let target = (end + step - 1) / step * step
        let zeros = ByteBuffer(repeating: 0, count: Int(min(target - allocatedEnd, 1 << 20)))
        var offset = allocatedEnd
        do {
            while offset < target {
                let count = Int(min(target - offset, Int64(zeros.readableBytes)))
                try SystemCalls.write(
                    activeFD, zeros.getSlice(at: 0, length: count)!, at: offset, path: segmentPath(activeNumber))
                offset += Int64(count)
            }
            allocatedEnd = target
            preallocationFailed = nil
        } catch {
            preallocationFailed = Date()
            try? SystemCalls.truncate(activeFD, to: max(allocatedEnd, activeEnd), path: segmentPath(activeNumber))
        }
    }

    /// Starts a new segment when the active one is full (or its tail is suspect).
    private func rotateIfNeeded() throws {
        guard activeEnd >= Int64(options.segmentSize) || needsRotation else { return }
        let number = activeNumber + 1
        let path = segmentPath(number)
        let fd = try SystemCalls.open(path, O_RDWR | O_CREAT | O_TRUNC)
        do {
            // The new file's name must be durable before any record in it is acknowledged.
            try SystemCalls.syncDirectory(logDirectory)
        } catch {
            Glibc.close(fd)
            unlink(path)
            throw error
        }
        // The old segment's preallocated zeros are not needed any more.
        if !needsRotation { _ = ftruncate(activeFD, off_t(activeEnd)) }
        Glibc.close(activeFD)
        activeFD = fd
        activeNumber = number
        activeEnd = 0
        allocatedEnd = 0
        needsRotation = false
        condition.withLock {
            segmentNumbers.append(number)
            liveCounts[number] = 0
            segmentCreated[number] = Date()
        }
        logger.debug("queue segment started", metadata: ["segment": "\(number)"])
    }

    // MARK: Index

    /// A STATE record is applied or failed: later updates build on the index again, unless a
    /// newer record of the same message is on its way (under the lock).
    private func forgetUnappliedState(_ record: PendingRecord) {
        guard let generation = record.stateGeneration, unappliedStates[record.record.id]?.generation == generation
        else { return }
        unappliedStates[record.record.id] = nil
    }

    /// Applies a durable record to the index (under the lock). The same function replays the
    /// log at recovery, so the index after a restart is the index before it.
    func apply(
        _ record: LogRecord, segment: UInt64, offset: Int64, length: Int, removedFiles: inout [String]
    ) throws {
        switch record {
        case .message(let message):
            // A later MESSAGE record with the same ID (compaction) supersedes the earlier one.
            try index.reserve(additional: 1)
            if let old = try index.lookup(message.id) { liveCounts[old.segment, default: 1] -= 1 }
            var entry = IndexEntry(
                id: message.id, arrival: message.arrival, size: message.size, held: message.held,
                delayWarned: message.delayWarned, dataInFile: message.dataInFile,
                recipientCount: message.envelope.recipients.count, segment: segment, offset: offset,
                headLength: length - LogRecord.trailerLength - (message.dataInFile ? 0 : message.size), dueAt: 0)
            entry.summarise(message.envelope.recipients.lazy.map { ($0.status, $0.nextAttempt) })
            try index.store(entry)
            liveCounts[segment, default: 0] += 1
            noteDue(entry)
            if newestRecovered.map({ $0 < message.id }) ?? true { newestRecovered = message.id }
        case .state(let id, let states):
            guard var entry = try index.lookup(id) else { return }
            entry.stateSegment = segment
            entry.stateOffset = offset
            entry.stateLength = length
            // A STATE record names every recipient; one it left out could only come from a log
            // of an older version, and counts as pending (delivered again rather than lost).
            var summary = [(RecipientStatus, Date?)](repeating: (.pending, nil), count: entry.recipientCount)
            for state in states where state.index < entry.recipientCount {
                summary[state.index] = (state.change.status, state.change.nextAttempt)
            }
            entry.summarise(summary)
            try index.store(entry)
            noteDue(entry)
        case .hold(let id), .release(let id), .delayWarned(let id):
            guard var entry = try index.lookup(id) else { return }
            switch record {
            case .hold: entry.held = true
            case .release: entry.held = false
            default: entry.delayWarned = true
            }
            try index.store(entry)
            noteDue(entry)
        case .remove(let id):
            guard let old = try index.remove(id) else { return }
            liveCounts[old.segment, default: 1] -= 1
            if old.dataInFile { removedFiles.append(dataPath(id)) }
        }
    }

    /// Deletes segments, strictly oldest first, while the oldest holds no live message (under
    /// the lock). A younger segment must stay while an older one does: its STATE and REMOVE
    /// records may refer to messages defined in the older one.
    func deleteObsoleteSegments() -> Bool {
        var deleted = false
        while segmentNumbers.count > 1, let oldest = segmentNumbers.first, liveCounts[oldest, default: 0] <= 0 {
            if let fd = segmentReaders.removeValue(forKey: oldest) { Glibc.close(fd) }
            unlink(segmentPath(oldest))
            segmentNumbers.removeFirst()
            liveCounts[oldest] = nil
            segmentCreated[oldest] = nil
            deleted = true
            logger.debug("queue segment deleted", metadata: ["segment": "\(oldest)"])
        }
        return deleted
    }

    // MARK: Compaction

    /// A message that stays for days (deferred) pins its segment and every younger one. When
    /// the oldest segment is older than `compactionAge` (or `force`), its live messages are
    /// appended again, with their current state, as new MESSAGE records; the copies supersede
    /// the originals and the segment can go. Runs on the committer thread, between batches, so
    /// the index is exactly the log's state while the copies are made.
    private func compactOldest(force: Bool) throws {
        let oldest: UInt64? = condition.withLock {
            guard segmentNumbers.count > 1, let oldest = segmentNumbers.first,
                liveCounts[oldest, default: 0] > 0,
                force || -(segmentCreated[oldest] ?? Date()).timeIntervalSinceNow >= options.compactionAge
            else { return nil }
            return oldest
        }
        guard let oldest else { return }
        let path = segmentPath(oldest)
        let fd = try SystemCalls.open(path, O_RDONLY)
        defer { Glibc.close(fd) }
        let end = try SystemCalls.size(fd, path: path)
        var batch: [PendingRecord] = []
        var batchBytes = 0
        var copied = 0
        // Record by record, reading only the framing of records that are not live MESSAGEs.
        var offset: Int64 = 0
        var header = ByteBuffer()
        // Every record's payload starts with the message's ID: read the framing with it.
        let prefix = LogRecord.headerLength + 10
        while offset + Int64(prefix) <= end {
            header.clear()
            try SystemCalls.read(fd, into: &header, count: prefix, at: offset, path: path)
            guard header.readableBytes == prefix, header.getInteger(at: 0, as: UInt32.self) == LogRecord.magic,
                let kind = header.getInteger(at: 4, as: UInt8.self),
                let payloadLength = header.getInteger(at: 5, as: UInt32.self),
                let sequence = header.getInteger(at: LogRecord.headerLength, as: UInt64.self),
                let random = header.getInteger(at: LogRecord.headerLength + 8, as: UInt16.self)
            else { break }
            let recordOffset = offset
            offset += Int64(LogRecord.headerLength) + Int64(payloadLength) + Int64(LogRecord.trailerLength)
            guard kind == LogRecord.Kind.message.rawValue else { continue }
            let current: (IndexEntry, QueuedMessage)? = try condition.withLock {
                guard let entry = try lookup(QueueID(sequence: sequence, random: random)),
                    entry.segment == oldest, entry.offset == recordOffset
                else { return nil }
                return (entry, try readMessage(entry))
            }
            guard let (entry, message) = current else { continue }
            let record = LogRecord.message(
                MessageRecord(
                    id: message.id, arrival: entry.arrival, size: entry.size, held: message.held,
                    delayWarned: message.delayWarned, dataInFile: entry.dataInFile, envelope: message.envelope))
            var bytes = ByteBuffer()
            if entry.dataInFile {
                record.encode(into: &bytes)
            } else {
                var data = ByteBuffer()
                try SystemCalls.read(fd, into: &data, count: entry.size, at: entry.dataOffset, path: path)
                guard data.readableBytes == entry.size else {
                    throw QueueError.corrupt("\(path) ends inside the data of \(message.id)")
                }
                record.encode(into: &bytes, inlineData: data)
            }
            batchBytes += bytes.readableBytes
            batch.append(PendingRecord(bytes: bytes, record: record, completion: nil))
            copied += 1
            if batchBytes >= 8 << 20 {
                if let error = commitBatch(batch) { throw error }
                batch.removeAll()
                batchBytes = 0
            }
        }
        if !batch.isEmpty, let error = commitBatch(batch) { throw error }
        logger.info("queue segment compacted", metadata: ["segment": "\(oldest)", "messages": "\(copied)"])
    }

    // MARK: Recovery

    /// Replays the log into the index, cuts off a torn tail, and removes leftovers: spool files
    /// of unfinished transactions and data files without a message.
    func recover() throws {
        let numbers = try SystemCalls.list(logDirectory).compactMap(Self.segmentNumber).sorted()
        index = try QueueIndex(path: directory + "/index")
        var removedFiles: [String] = []
        var records = 0
        for (position, number) in numbers.enumerated() {
            let path = segmentPath(number)
            let isLast = position == numbers.count - 1
            let fd = try SystemCalls.open(path, isLast ? O_RDWR : O_RDONLY)
            var keepOpen = false
            defer { if !keepOpen { Glibc.close(fd) } }
            var info = stat()
            guard fstat(fd, &info) == 0 else { throw QueueError.storage("stat \(path)") }
            var size = Int(info.st_size)
            var content = ByteBuffer()
            try SystemCalls.read(fd, into: &content, count: size, at: 0, path: path)
            segmentNumbers.append(number)
            liveCounts[number] = liveCounts[number] ?? 0
            segmentCreated[number] = Date(timeIntervalSince1970: Double(info.st_mtim.tv_sec))
            var offset = 0
            replay: while true {
                switch LogRecord.decode(content, at: offset) {
                case .record(let record, let length):
                    try apply(
                        record, segment: number, offset: Int64(offset), length: length, removedFiles: &removedFiles)
                    offset += length
                    records += 1
                case .end:
                    break replay
                case .invalid where content.isZero(from: offset):
                    break replay  // the preallocated rest of the segment
                case .invalid(let reason):
                    if isLast {
                        // A batch cut short by a crash: never acknowledged, since its sync did
                        // not complete.
                        logger.warning(
                            "queue log torn tail cut off",
                            metadata: [
                                "segment": "\(number)", "offset": "\(offset)", "bytes": "\(size - offset)",
                                "reason": "\(reason)",
                            ])
                        try SystemCalls.truncate(fd, to: Int64(offset), path: path)
                        try SystemCalls.dataSync(fd, path: path)
                        size = offset
                    } else {
                        logger.error(
                            "queue log segment damaged; the rest of it is skipped",
                            metadata: [
                                "segment": "\(number)", "offset": "\(offset)", "bytes": "\(size - offset)",
                                "reason": "\(reason)",
                            ])
                    }
                    break replay
                }
            }
            if isLast {
                keepOpen = true
                activeFD = fd
                activeNumber = number
                activeEnd = Int64(offset)
                allocatedEnd = Int64(size)
            }
        }
        if numbers.isEmpty {
            let number: UInt64 = 1
            activeFD = try SystemCalls.open(segmentPath(number), O_RDWR | O_CREAT)
            activeNumber = number
            activeEnd = 0
            segmentNumbers = [number]
            liveCounts[number] = 0
            segmentCreated[number] = Date()
            try SystemCalls.syncDirectory(logDirectory)
        }

        for name in try SystemCalls.list(spoolDirectory) { unlink("\(spoolDirectory)/\(name)") }
        for name in try SystemCalls.list(dataDirectory) {
            guard let id = QueueID(name), try index.lookup(id)?.dataInFile == true else {
                unlink("\(dataDirectory)/\(name)")
                continue
            }
        }
        // A message whose data file is missing was never acknowledged (its record outlived a
        // failed batch); it cannot be delivered.
        var missing: [IndexEntry] = []
        try index.forEach { entry in
            if entry.dataInFile && access(dataPath(entry.id), F_OK) != 0 { missing.append(entry) }
            return true
        }
        for entry in missing {
            logger.error("queued message without its data file dropped", metadata: ["queue_id": "\(entry.id)"])
            try index.remove(entry.id)
            liveCounts[entry.segment, default: 1] -= 1
        }
        if let newestRecovered { QueueID.advance(past: newestRecovered) }
        if deleteObsoleteSegments() { try SystemCalls.syncDirectory(logDirectory) }
        logger.info(
            "queue opened",
            metadata: [
                "directory": "\(directory)", "messages": "\(index.count)", "segments": "\(segmentNumbers.count)",
                "index_slots": "\(index.capacity)",
                "records": "\(records)",
            ])
    }
}

private let zeroBlock = [UInt8](repeating: 0, count: 64 << 10)

extension ByteBuffer {
    /// Whether every readable octet from `offset` on is zero.
    /// Compared with `memcmp` a block at a time: a preallocated tail is up to a megabyte, and
    /// an octet-by-octet loop is slow in debug builds.
    fileprivate func isZero(from offset: Int) -> Bool {
        withUnsafeReadableBytes { bytes in
            var position = offset - readerIndex
            guard position >= 0, let base = bytes.baseAddress else { return position >= 0 }
            return zeroBlock.withUnsafeBytes { zeros in
                while position < bytes.count {
                    let count = min(zeros.count, bytes.count - position)
                    if memcmp(base + position, zeros.baseAddress!, count) != 0 { return false }
                    position += count
                }
                return true
            }
        }
    }
}
