import Foundation
import Glibc
import Logging
import NIOCore
import Synchronization
import Testing

@testable import MailQueue

/// A fresh queue directory under /tmp, removed afterwards.
func withQueueDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    var template = Array("/tmp/tern-queue-test-XXXXXX".utf8CString)
    let path = try template.withUnsafeMutableBufferPointer { buffer -> String in
        guard let result = mkdtemp(buffer.baseAddress!) else { throw QueueError.storage("mkdtemp") }
        return String(cString: result)
    }
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try await body(path + "/queue")
}

let quietLogger = Logger(label: "queue-test") { _ in SwiftLogNoOpLogHandler() }

func openStore(_ directory: String, _ options: QueueStore.Options = .init()) throws -> QueueStore {
    try QueueStore.open(directory: directory, logger: quietLogger, options: options)
}

func messageBytes(_ size: Int, seed: Int = 0) -> [UInt8] {
    (0..<size).map { UInt8(truncatingIfNeeded: ($0 &* 31) ^ seed &+ ($0 >> 9)) }
}

/// Streams `bytes` into a new spool in chunks, as an SMTP session would, and commits it.
func commit(
    _ store: QueueStore, _ bytes: [UInt8], envelope: QueueEnvelope = simpleEnvelope, chunk: Int = 8192
) async throws -> QueuedMessage {
    let spool = try store.makeSpool()
    var offset = 0
    while offset < bytes.count {
        let end = min(bytes.count, offset + chunk)
        try spool.write(ByteBuffer(bytes: bytes[offset..<end]))
        offset = end
    }
    return try await store.commit(spool, envelope: envelope)
}

func readAll(_ store: QueueStore, _ id: QueueID) throws -> [UInt8] {
    let reader = try store.readData(id)
    var bytes: [UInt8] = []
    while let chunk = try reader.next(maxBytes: 100_000) { bytes += chunk.readableBytesView }
    return bytes
}

let simpleEnvelope = QueueEnvelope(
    sender: "sender@example.test", recipients: [QueuedRecipient(address: "rcpt@example.test")])

func files(_ path: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
}

@Suite struct QueueStoreTests {
    @Test func commitAndReopenSmallAndLarge() async throws {
        try await withQueueDirectory { directory in
            let envelope = LogRecordTests.envelope
            let small = messageBytes(5 * 1024, seed: 1)
            let medium = messageBytes(200 * 1024, seed: 2)  // spills to the spool file, still inline
            let large = messageBytes(1_500_000, seed: 3)  // own data file
            let store = try openStore(directory)
            var committed: [QueuedMessage] = []
            for bytes in [small, medium, large] {
                committed.append(try await commit(store, bytes, envelope: envelope))
            }
            #expect(committed.map(\.size) == [small.count, medium.count, large.count])
            #expect(committed.allSatisfy { $0.envelope == envelope && !$0.held })
            #expect(files(directory + "/spool").isEmpty)
            #expect(files(directory + "/data") == ["\(committed[2].id)"])
            #expect(try readAll(store, committed[1].id) == medium)
            store.close()

            let reopened = try openStore(directory)
            defer { reopened.close() }
            #expect(reopened.messages() == committed)
            for (message, bytes) in zip(committed, [small, medium, large]) {
                #expect(reopened.message(message.id) == message)
                #expect(try readAll(reopened, message.id) == bytes)
            }
            let empty = try await commit(reopened, [])
            #expect(try readAll(reopened, empty.id) == [])
        }
    }

    @Test func secondOpenIsRefused() async throws {
        try await withQueueDirectory { directory in
            let store = try openStore(directory)
            #expect {
                try openStore(directory)
            } throws: { error in
                guard case .locked(let text) = error as? QueueError else { return false }
                return text.contains("in use by another process") && text.contains("pid \(getpid())")
            }
            store.close()
            try openStore(directory).close()
        }
    }

    @Test func concurrentCommitsShareSyncs() async throws {
        try await withQueueDirectory { directory in
            // A disk that takes 20 ms per sync: whatever arrives during one sync must go into
            // the next together. Without group commit this would be 512 syncs (over 10 s); the
            // bound holds however busy the machine is.
            var options = QueueStore.Options()
            options.simulatedSyncLatency = 0.02
            let store = try openStore(directory, options)
            // Spools filled beforehand, so that the tasks do little but commit (a debug build
            // on a busy machine would otherwise produce records slower than the disk syncs).
            let spools = try (0..<64).map { _ in
                try (0..<8).map { _ in
                    let spool = try store.makeSpool()
                    try spool.write(ByteBuffer(bytes: messageBytes(5 * 1024)))
                    return spool
                }
            }
            // One task per message: every commit is in flight at once, as with 512 sessions
            // ending DATA together. (Tasks that each commit several messages in a row measure
            // the scheduler as much as the queue: on a loaded 2-core machine their next
            // commits arrive one by one.)
            // A gate holds every task until all have started, so that none still waits for a
            // thread when the first commits reach the committer.
            let gate = StartGate(count: 512)
            let ids = try await withThrowingTaskGroup(of: QueueID.self) { group in
                for spool in spools.joined() {
                    group.addTask {
                        await gate.arrive()
                        return try await store.commit(spool, envelope: simpleEnvelope).id
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let statistics = store.statistics
            #expect(ids.count == 512 && Set(ids).count == 512)
            #expect(statistics.commits == 512)
            #expect(statistics.syncs < 512 / 4, "group commit: \(statistics.syncs) syncs")
            store.close()
            let reopened = try openStore(directory)
            defer { reopened.close() }
            #expect(Set(reopened.messages().map(\.id)) == Set(ids))
        }
    }

    /// Without preallocation, so that the file's end is the log's end.
    @Test func tornTailIsCutOff() async throws {
        try await withQueueDirectory { directory in
            let options = QueueStore.Options(preallocation: 0)
            var store = try openStore(directory, options)
            var ids: [QueueID] = []
            for seed in 0..<10 { ids.append(try await commit(store, messageBytes(3000, seed: seed)).id) }
            store.close()
            let segment = directory + "/log/" + files(directory + "/log").last!

            // The last record loses its final bytes, as if the crash came mid-write.
            let size = try FileManager.default.attributesOfItem(atPath: segment)[.size] as! Int
            #expect(truncate(segment, off_t(size - 3)) == 0)
            store = try openStore(directory, options)
            #expect(store.messages().map(\.id) == Array(ids.dropLast()))
            let replacement = try await commit(store, messageBytes(3000, seed: 99))
            store.close()

            // Garbage after complete records.
            let handle = FileHandle(forWritingAtPath: segment)!
            handle.seekToEndOfFile()
            handle.write(Data(messageBytes(777, seed: 5)))
            try handle.close()
            store = try openStore(directory, options)
            #expect(store.messages().map(\.id) == Array(ids.dropLast()) + [replacement.id])
            for (seed, id) in ids.dropLast().enumerated() {
                #expect(try readAll(store, id) == messageBytes(3000, seed: seed))
            }
            let another = try await commit(store, messageBytes(10))
            store.close()
            store = try openStore(directory, options)
            #expect(store.messages().count == 11 && store.message(another.id) != nil)
            store.close()
        }
    }

    /// The active segment grows in zeroed steps; its zero tail is a clean end, a batch torn on
    /// top of it is cut off, and rotation trims the old segment to its records.
    @Test func preallocatedSegmentsRecover() async throws {
        try await withQueueDirectory { directory in
            let options = QueueStore.Options(segmentSize: 64 << 10, preallocation: 16 << 10)
            var store = try openStore(directory, options)
            var ids: [QueueID] = []
            for seed in 0..<5 { ids.append(try await commit(store, messageBytes(3000, seed: seed)).id) }
            let end = Int(store.activeEnd)
            store.close()
            let segment = directory + "/log/" + files(directory + "/log").last!
            var size = try FileManager.default.attributesOfItem(atPath: segment)[.size] as! Int
            #expect(size == 16 << 10 && end < size)

            // A clean zero tail: everything comes back, and appending continues at the log's end.
            store = try openStore(directory, options)
            #expect(store.messages().map(\.id) == ids)
            #expect(store.activeEnd == Int64(end))
            ids.append(try await commit(store, messageBytes(3000, seed: 5)).id)
            let secondEnd = Int(store.activeEnd)
            store.close()

            // A crash in the middle of the last batch: its first half reached the disk, over zeros.
            let content = try Data(contentsOf: URL(fileURLWithPath: segment))
            #expect(content.count % (16 << 10) == 0 && secondEnd < content.count)
            let torn = content[end..<(end + (secondEnd - end) / 2)]
            let handle = FileHandle(forWritingAtPath: segment)!
            try handle.truncate(atOffset: UInt64(end))
            try handle.seek(toOffset: UInt64(end))
            handle.write(torn)
            handle.write(Data(count: content.count - end - torn.count))
            try handle.close()
            store = try openStore(directory, options)
            #expect(store.messages().map(\.id) == Array(ids.dropLast()))
            #expect(store.activeEnd == Int64(end))
            ids.removeLast()

            // Enough to rotate: the old segment keeps its records only, everything reads back.
            for seed in 10..<40 { ids.append(try await commit(store, messageBytes(3000, seed: seed)).id) }
            store.close()
            let segments = files(directory + "/log")
            #expect(segments.count >= 2)
            size = try FileManager.default.attributesOfItem(atPath: directory + "/log/" + segments[0])[.size] as! Int
            #expect(size >= 64 << 10 && size % (16 << 10) != 0)
            store = try openStore(directory, options)
            defer { store.close() }
            #expect(store.messages().map(\.id) == ids)
            #expect(try readAll(store, ids[0]) == messageBytes(3000, seed: 0))
            #expect(try readAll(store, ids.last!) == messageBytes(3000, seed: 39))
        }
    }

    @Test func stateHoldAndRemoveSurviveReopen() async throws {
        try await withQueueDirectory { directory in
            var store = try openStore(directory)
            let envelope = QueueEnvelope(
                sender: "", recipients: ["a@x.test", "b@x.test", "c@x.test"].map { QueuedRecipient(address: $0) })
            let first = try await commit(store, messageBytes(100), envelope: envelope)
            let second = try await commit(store, messageBytes(100), envelope: envelope)
            let now = Date()
            let later = now.addingTimeInterval(3600)
            let afterLater = later.addingTimeInterval(1)
            #expect(store.due(at: now, limit: 10) == [first.id, second.id])
            #expect(store.due(at: now, limit: 1) == [first.id])

            try await store.update(
                first.id,
                recipients: [
                    0: RecipientChange(status: .delivered, attempts: 1),
                    1: RecipientChange(
                        status: .deferred, attempts: 1, nextAttempt: later, lastError: "451 4.4.1 no answer"),
                ])
            try await store.update(
                first.id, recipient: 2, status: .bounced, attempts: 1, nextAttempt: nil, lastError: "550 5.1.1")
            try await store.hold(second.id)
            try await store.markDelayWarned(first.id)
            #expect(store.due(at: now, limit: 10) == [])
            #expect(store.due(at: afterLater, limit: 10) == [first.id])
            await #expect(throws: QueueError.unknownRecipient(first.id, index: 3)) {
                try await store.update(first.id, recipient: 3, RecipientChange(status: .delivered, attempts: 1))
            }
            let stranger = QueueID.generate()
            await #expect(throws: QueueError.unknownMessage(stranger)) { try await store.hold(stranger) }
            let before = store.messages()
            #expect(before[0].envelope.recipients.map(\.status) == [.delivered, .deferred, .bounced])
            #expect(before[0].envelope.recipients[1].lastError == "451 4.4.1 no answer")
            #expect(before[1].held)
            #expect(before[0].delayWarned && !before[1].delayWarned)
            store.close()

            store = try openStore(directory)
            #expect(store.messages() == before)
            #expect(store.due(at: afterLater, limit: 10) == [first.id])
            try await store.release(second.id)
            #expect(store.due(at: now, limit: 10) == [second.id])
            try await store.update(first.id, recipient: 1, RecipientChange(status: .delivered, attempts: 2))
            #expect(store.message(first.id)!.isFinal)
            try await store.remove(first.id)
            #expect(store.message(first.id) == nil)
            #expect(throws: QueueError.unknownMessage(first.id)) { try store.readData(first.id) }
            store.close()

            store = try openStore(directory)
            defer { store.close() }
            #expect(store.messages().map(\.id) == [second.id])
            #expect(store.message(second.id)?.held == false)
        }
    }

    @Test func segmentsRotateAndGoOldestFirst() async throws {
        try await withQueueDirectory { directory in
            let options = QueueStore.Options(segmentSize: 4096)
            var store = try openStore(directory, options)
            var ids: [QueueID] = []
            for seed in 0..<6 { ids.append(try await commit(store, messageBytes(5000, seed: seed)).id) }
            #expect(files(directory + "/log").count == 6)

            // The oldest segment's message pins every younger segment.
            for id in ids.dropFirst() { try await store.remove(id) }
            #expect(files(directory + "/log").count == 7)
            store.close()
            store = try openStore(directory, options)
            #expect(store.messages().map(\.id) == [ids[0]])
            try await store.remove(ids[0])
            #expect(files(directory + "/log").count == 1)
            #expect(store.statistics.segments == 1)
            store.close()
            store = try openStore(directory, options)
            defer { store.close() }
            #expect(store.messages().isEmpty)
        }
    }

    @Test func compactionFreesPinnedSegments() async throws {
        try await withQueueDirectory { directory in
            let options = QueueStore.Options(segmentSize: 4096, inlineLimit: 8000)
            var store = try openStore(directory, options)
            let envelope = QueueEnvelope(
                sender: "s@x.test",
                recipients: [QueuedRecipient(address: "a@y.test"), QueuedRecipient(address: "b@y.test")])
            let inline = try await commit(store, messageBytes(5000, seed: 1), envelope: envelope)
            let inFile = try await commit(store, messageBytes(9000, seed: 2), envelope: envelope)
            var others: [QueueID] = []
            for seed in 0..<4 { others.append(try await commit(store, messageBytes(5000, seed: 10 + seed)).id) }
            let next = Date(timeIntervalSince1970: 1_900_000_000)
            try await store.update(
                inline.id, recipient: 1, status: .deferred, attempts: 4, nextAttempt: next, lastError: "later")
            try await store.hold(inFile.id)
            try await store.markDelayWarned(inFile.id)
            for id in others { try await store.remove(id) }
            let before = store.messages()
            #expect(before.map(\.delayWarned) == [false, true])
            #expect(files(directory + "/log").count >= 6)

            try await store.compact()  // the first segment: `inline`
            try await store.compact()  // then `inFile`'s, and the empty ones after it
            let remaining = files(directory + "/log")
            #expect(remaining.count <= 2 && remaining.allSatisfy { $0 >= "000000000006.seg" }, "\(remaining)")
            #expect(store.messages() == before)
            #expect(try readAll(store, inline.id) == messageBytes(5000, seed: 1))
            store.close()

            store = try openStore(directory, options)
            defer { store.close() }
            #expect(store.messages() == before)
            #expect(try readAll(store, inline.id) == messageBytes(5000, seed: 1))
            #expect(try readAll(store, inFile.id) == messageBytes(9000, seed: 2))
        }
    }

    @Test func readerOutlivesRemoval() async throws {
        try await withQueueDirectory { directory in
            let store = try openStore(directory, QueueStore.Options(segmentSize: 4096, inlineLimit: 100_000))
            defer { store.close() }
            let inline = try await commit(store, messageBytes(50_000, seed: 1))
            let inFile = try await commit(store, messageBytes(150_000, seed: 2))
            let readers = [try store.readData(inline.id), try store.readData(inFile.id)]
            let firstChunks = try readers.map { try $0.next(maxBytes: 1000)! }
            try await store.remove(inline.id)
            try await store.remove(inFile.id)
            #expect(files(directory + "/data").isEmpty)
            #expect(files(directory + "/log").count == 1)
            for (reader, (first, seed)) in zip(readers, zip(firstChunks, [1, 2])) {
                var bytes = Array(first.readableBytesView)
                while let chunk = try reader.next() { bytes += chunk.readableBytesView }
                #expect(bytes == messageBytes(reader.size, seed: seed))
            }
        }
    }

    @Test func spoolSpillsAndDiscards() async throws {
        try await withQueueDirectory { directory in
            let store = try openStore(directory)
            defer { store.close() }
            let spool = try store.makeSpool()
            try spool.write(ByteBuffer(bytes: messageBytes(60_000)))
            #expect(files(directory + "/spool").isEmpty)
            try spool.write(ByteBuffer(bytes: messageBytes(60_000)))
            #expect(files(directory + "/spool") == ["\(spool.id)"])
            #expect(spool.byteCount == 120_000)
            spool.discard()
            #expect(files(directory + "/spool").isEmpty)
            #expect(throws: QueueError.spoolFinished(spool.id)) { try spool.write(ByteBuffer(string: "x")) }

            // A discard after a commit (the session ends) leaves the message alone.
            let kept = try store.makeSpool()
            try kept.write(ByteBuffer(bytes: messageBytes(100_000)))
            let message = try await store.commit(kept, envelope: simpleEnvelope)
            kept.discard()
            #expect(try readAll(store, message.id) == messageBytes(100_000))
            #expect(files(directory + "/spool").isEmpty)
        }
    }

    @Test func staleSpoolAndOrphanDataFilesAreRemovedOnOpen() async throws {
        try await withQueueDirectory { directory in
            try openStore(directory).close()
            let stale = QueueID.generate()
            #expect(FileManager.default.createFile(atPath: "\(directory)/spool/\(stale)", contents: Data("x".utf8)))
            #expect(FileManager.default.createFile(atPath: "\(directory)/data/\(stale)", contents: Data("x".utf8)))
            let store = try openStore(directory)
            defer { store.close() }
            #expect(files(directory + "/spool").isEmpty)
            #expect(files(directory + "/data").isEmpty)
            // New IDs sort after everything recovered.
            #expect(QueueID.generate() > stale)
        }
    }

    @Test func closedStoreRefusesWork() async throws {
        try await withQueueDirectory { directory in
            let store = try openStore(directory)
            let spool = try store.makeSpool()
            try spool.write(ByteBuffer(string: "hello"))
            store.close()
            store.close()
            await #expect(throws: QueueError.closed) { try await store.commit(spool, envelope: simpleEnvelope) }
            #expect(throws: QueueError.closed) { try store.makeSpool() }
        }
    }

    /// The completion forms report through their callback what the async forms throw, and
    /// apply their record like the async forms do (it survives a reopen).
    @Test func completionFormsRecordAndReport() async throws {
        try await withQueueDirectory { directory in
            let store = try openStore(directory)
            let kept = try await commit(store, messageBytes(100))
            let removed = try await commit(store, messageBytes(100, seed: 1))
            let later = Date(timeIntervalSince1970: 2_000_000_000)
            let change = RecipientChange(status: .deferred, attempts: 1, nextAttempt: later, lastError: "4.4.0 x")
            let outcomes: [QueueError?] = await withCheckedContinuation { continuation in
                store.update(kept.id, recipients: [0: change]) { first in
                    store.remove(removed.id) { second in
                        store.update(kept.id, recipients: [5: change]) { third in
                            store.remove(QueueID.generate()) { fourth in
                                continuation.resume(returning: [first, second, third, fourth])
                            }
                        }
                    }
                }
            }
            #expect(outcomes[0] == nil)
            #expect(outcomes[1] == nil)
            #expect(outcomes[2] == .unknownRecipient(kept.id, index: 5))
            guard case .unknownMessage = outcomes[3] else {
                Issue.record("expected unknownMessage, got \(String(describing: outcomes[3]))")
                return
            }
            store.close()
            let reopened = try openStore(directory)
            defer { reopened.close() }
            #expect(reopened.message(removed.id) == nil)
            let recipient = try #require(reopened.message(kept.id)?.envelope.recipients.first)
            #expect(recipient.status == .deferred)
            #expect(recipient.nextAttempt == later)
            #expect(recipient.lastError == "4.4.0 x")
        }
    }

    /// A STATE record holds every recipient, so two updates handed over before either is
    /// durable must each build on the one before, or the second would undo the first.
    @Test func updatesInFlightBuildOnEachOther() async throws {
        try await withQueueDirectory { directory in
            var store = try openStore(directory, QueueStore.Options(lazySyncDelay: 0.3))
            let envelope = QueueEnvelope(
                sender: "s@x.test",
                recipients: ["a@y.test", "b@y.test", "c@y.test"].map { QueuedRecipient(address: $0) })
            let message = try await commit(store, messageBytes(100), envelope: envelope)
            let later = Date(timeIntervalSince1970: 2_000_000_000)
            let outcomes: [QueueError?] = await withCheckedContinuation { continuation in
                let results = Mutex<[QueueError?]>([])
                let done: @Sendable (QueueError?) -> Void = { error in
                    let all = results.withLock { results in
                        results.append(error)
                        return results.count == 2 ? results : nil
                    }
                    if let all { continuation.resume(returning: all) }
                }
                store.update(
                    message.id, recipients: [0: RecipientChange(status: .delivered, attempts: 1)], completion: done)
                store.update(
                    message.id,
                    recipients: [
                        1: RecipientChange(status: .deferred, attempts: 1, nextAttempt: later, lastError: "4xx")
                    ],
                    completion: done)
            }
            #expect(outcomes == [nil, nil])
            let expected: [RecipientStatus] = [.delivered, .deferred, .pending]
            #expect(store.message(message.id)?.envelope.recipients.map(\.status) == expected)
            #expect(store.due(at: Date(), limit: 0) == [])
            #expect(store.due(at: Date(), limit: 5) == [message.id])
            try await store.update(message.id, recipient: 2, RecipientChange(status: .bounced, attempts: 1))
            #expect(store.due(at: Date(), limit: 5) == [])
            #expect(store.due(at: later, limit: 5) == [message.id])
            store.close()

            store = try openStore(directory)
            defer { store.close() }
            let recipients = try #require(store.message(message.id)?.envelope.recipients)
            #expect(recipients.map(\.status) == [.delivered, .deferred, .bounced])
            #expect(recipients[1].nextAttempt == later && recipients[1].lastError == "4xx")
            #expect(store.due(at: Date(), limit: 5) == [])
            #expect(store.due(at: later, limit: 5) == [message.id])
        }
    }

    /// Thousands of messages: the index grows past its first size and is rebuilt on open, and
    /// `due` gives the oldest first however many are due.
    @Test func manyMessagesThroughIndexGrowth() async throws {
        try await withQueueDirectory { directory in
            var store = try openStore(directory)
            var ids: [QueueID] = []
            for batch in 0..<25 {
                let current = store
                ids += try await withThrowingTaskGroup(of: QueueID.self) { group in
                    for seed in 0..<100 {
                        group.addTask { try await commit(current, messageBytes(200, seed: batch * 100 + seed)).id }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
            }
            ids.sort()
            #expect(store.statistics.messages == 2500)
            #expect(store.due(at: Date(), limit: 10) == Array(ids.prefix(10)))
            for id in ids.prefix(1000) { try await store.remove(id) }
            store.close()

            store = try openStore(directory)
            defer { store.close() }
            #expect(store.statistics.messages == 1500)
            #expect(store.messages().map(\.id) == Array(ids.dropFirst(1000)))
            #expect(store.due(at: Date(), limit: 3) == Array(ids[1000..<1003]))
            #expect(try readAll(store, ids[2499]).count == 200)
            store.close()
            #expect(store.message(ids[2499]) == nil && store.due(at: Date(), limit: 3) == [])
            #expect(throws: QueueError.closed) { try store.readData(ids[2499]) }
        }
    }

    @Test func throughputSanity() async throws {
        try await withQueueDirectory { directory in
            let store = try openStore(directory)
            defer { store.close() }
            let bytes = messageBytes(5 * 1024)
            let tasks = 64
            let perTask = 150
            let start = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<tasks {
                    group.addTask {
                        for _ in 0..<perTask { _ = try await commit(store, bytes) }
                    }
                }
                try await group.waitForAll()
            }
            let elapsed = ContinuousClock.now - start
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            let statistics = store.statistics
            print(
                "queue throughput: \(tasks * perTask) commits of 5 KiB from \(tasks) tasks in "
                    + "\(String(format: "%.2f", seconds)) s = \(Int(Double(tasks * perTask) / seconds)) commits/s, "
                    + "\(statistics.syncs) syncs (\(statistics.commits / max(1, statistics.syncs)) per sync)")
            #expect(statistics.commits == tasks * perTask)
        }
    }
}

/// Releases its waiters together once `count` of them have arrived.
actor StartGate {
    private let count: Int
    private var waiting: [CheckedContinuation<Void, Never>] = []

    init(count: Int) { self.count = count }

    func arrive() async {
        await withCheckedContinuation { continuation in
            waiting.append(continuation)
            if waiting.count == count {
                for waiter in waiting { waiter.resume() }
                waiting = []
            }
        }
    }
}
