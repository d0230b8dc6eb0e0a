import Foundation
import Glibc
import NIOCore
import Testing

@testable import MailQueue

/// The on-disk index against a dictionary: the same operations, the same contents.
@Suite struct QueueIndexTests {
    /// A fixed sequence of pseudo-random numbers (a 64-bit LCG), so that a failure repeats.
    struct Numbers {
        var state: UInt64
        mutating func next(_ bound: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(bound))
        }
    }

    func entry(_ id: QueueID, _ tag: Int) -> IndexEntry {
        IndexEntry(
            id: id, arrival: Int64(tag), size: tag * 7, held: tag % 3 == 0, delayWarned: tag % 5 == 0,
            dataInFile: tag % 2 == 0, isFinal: tag % 7 == 0, recipientCount: tag % 100 + 1,
            segment: UInt64(tag / 10 + 1),
            offset: Int64(tag) * 300, headLength: 200 + tag % 50, stateSegment: UInt64(tag % 4),
            stateOffset: Int64(tag) * 11, stateLength: 40 + tag % 9, dueAt: Int64(tag) * 1_000_000)
    }

    func withIndex(_ body: (QueueIndex) throws -> Void) throws {
        let path = "/tmp/tern-index-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(path) }
        let index = try QueueIndex(path: path, capacity: 16)
        defer { index.close() }
        try body(index)
    }

    @Test func entryRoundTrip() {
        for tag in [0, 1, 6, 35, 99_999] {
            let original = entry(QueueID.generate(), tag)
            var buffer = ByteBuffer()
            original.encode(into: &buffer)
            #expect(buffer.readableBytes == IndexEntry.size)
            #expect(IndexEntry.decode(buffer, at: 0) == original)
        }
        #expect(IndexEntry.decode(ByteBuffer(repeating: 0, count: IndexEntry.size), at: 0) == nil)
    }

    @Test func matchesADictionaryThroughInsertsReplacesRemovesAndGrowth() throws {
        try withIndex { index in
            var model: [QueueID: IndexEntry] = [:]
            var ids: [QueueID] = []
            var random = Numbers(state: 42)
            for step in 0..<6000 {
                let choice = random.next(10)
                if choice < 5 || ids.isEmpty {
                    let id = QueueID.generate()
                    ids.append(id)
                    try index.reserve(additional: 1)
                    try index.store(entry(id, step))
                    model[id] = entry(id, step)
                } else if choice < 7 {
                    let id = ids[random.next(ids.count)]
                    try index.store(entry(id, step))
                    model[id] = entry(id, step)
                } else {
                    let position = random.next(ids.count)
                    let id = ids.remove(at: position)
                    #expect(try index.remove(id) == model.removeValue(forKey: id))
                }
                #expect(index.count == model.count)
                #expect(index.count * 2 <= index.capacity)
                if step % 500 == 0 {
                    var seen: [QueueID: IndexEntry] = [:]
                    try index.forEach {
                        seen[$0.id] = $0; return true
                    }
                    #expect(seen == model)
                }
            }
            for (id, expected) in model { #expect(try index.lookup(id) == expected) }
            #expect(try index.lookup(QueueID.generate()) == nil)
            #expect(try index.remove(QueueID.generate()) == nil)
            #expect(index.capacity >= 1024, "grew from 16 slots: \(index.capacity)")
        }
    }

    @Test func removalKeepsEveryProbeRunReachable() throws {
        // Many entries in a small table make long probe runs that wrap around its end; removing
        // them in every order must leave the rest findable (backward-shift deletion).
        try withIndex { index in
            let ids = (0..<7).map { _ in QueueID.generate() }
            for (tag, id) in ids.enumerated() { try index.store(entry(id, tag)) }
            var random = Numbers(state: 7)
            for _ in 0..<200 {
                var remaining = ids
                while !remaining.isEmpty {
                    let id = remaining.remove(at: random.next(remaining.count))
                    #expect(try index.remove(id) != nil)
                    for other in remaining { #expect(try index.lookup(other) != nil) }
                }
                for (tag, id) in ids.enumerated() { try index.store(entry(id, tag)) }
            }
        }
    }

    @Test func summaryOfRecipientStates() {
        var entry = entry(QueueID.generate(), 1)
        let later = Date(timeIntervalSince1970: 2_000_000_000)
        let sooner = Date(timeIntervalSince1970: 1_900_000_000)
        let cases: [([(RecipientStatus, Date?)], final: Bool, due: Int64)] = [
            ([(.pending, nil), (.deferred, later)], false, 0),
            ([(.deferred, later), (.deferred, sooner), (.delivered, nil)], false, QueueTime.microseconds(sooner)),
            ([(.delivered, nil), (.bounced, nil)], true, 0),
            ([(.deferred, nil)], false, 0),
            ([], true, 0),
        ]
        for (states, final, due) in cases {
            entry.summarise(states)
            #expect(entry.isFinal == final && entry.dueAt == due, "\(states)")
        }
    }
}
