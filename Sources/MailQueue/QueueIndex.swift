import Foundation
import Glibc
import NIOCore

/// What the index keeps per message: a fixed 80 octets that say where the message's records
/// are and when it is next due. The envelope itself stays in the log and is read from there
/// (`QueueStore.message`), so the index costs no memory per message at all.
struct IndexEntry: Hashable {
    var id: QueueID
    /// Microseconds since 1970.
    var arrival: Int64
    var size: Int
    var held = false
    var delayWarned = false
    var dataInFile: Bool
    /// Every recipient is delivered or bounced: due for removal.
    var isFinal = false
    var recipientCount: Int
    /// The segment and offset of the message's current MESSAGE record, and the length of its
    /// part before any inline data (framing, envelope).
    var segment: UInt64
    var offset: Int64
    var headLength: Int
    /// The message's latest STATE record, which holds every recipient's state; segment 0: none
    /// since the MESSAGE record.
    var stateSegment: UInt64 = 0
    var stateOffset: Int64 = 0
    var stateLength: Int = 0
    /// Microseconds since 1970 when some recipient is next due (0: now).
    var dueAt: Int64

    /// Where the inline data starts, or -1 when the data is in its own file.
    var dataOffset: Int64 { dataInFile ? -1 : offset + Int64(headLength) }

    /// Whether delivery has something to do at `now` (microseconds): a recipient is due, or
    /// the message is final and only waits for its removal.
    func isDue(at now: Int64) -> Bool { !held && (isFinal || dueAt <= now) }

    /// The summary fields (`isFinal`, `dueAt`) for recipients in these states.
    mutating func summarise<S: Sequence>(_ states: S) where S.Element == (RecipientStatus, Date?) {
        var final = true
        var due = Int64.max
        for (status, next) in states {
            switch status {
            case .delivered, .bounced: continue
            case .pending: due = 0
            case .deferred: due = min(due, next.map(QueueTime.microseconds) ?? 0)
            }
            final = false
        }
        isFinal = final
        dueAt = final ? 0 : due
    }

    static let size = 80

    func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(1))
        buffer.writeInteger(UInt8((held ? 1 : 0) | (dataInFile ? 2 : 0) | (delayWarned ? 4 : 0) | (isFinal ? 8 : 0)))
        buffer.writeInteger(id.random)
        buffer.writeInteger(UInt32(clamping: recipientCount))
        buffer.writeInteger(id.sequence)
        buffer.writeInteger(arrival)
        buffer.writeInteger(Int64(size))
        buffer.writeInteger(segment)
        buffer.writeInteger(offset)
        buffer.writeInteger(stateSegment)
        buffer.writeInteger(stateOffset)
        buffer.writeInteger(UInt32(clamping: headLength))
        buffer.writeInteger(UInt32(clamping: stateLength))
        buffer.writeInteger(dueAt)
    }

    /// The entry in the slot at `offset`, or nil for an empty slot.
    static func decode(_ buffer: ByteBuffer, at offset: Int) -> IndexEntry? {
        guard buffer.getInteger(at: offset, as: UInt8.self) == 1 else { return nil }
        let flags = buffer.getInteger(at: offset + 1, as: UInt8.self)!
        func int64(_ at: Int) -> Int64 { buffer.getInteger(at: offset + at, as: Int64.self)! }
        func uint64(_ at: Int) -> UInt64 { buffer.getInteger(at: offset + at, as: UInt64.self)! }
        func uint32(_ at: Int) -> Int { Int(buffer.getInteger(at: offset + at, as: UInt32.self)!) }
        return IndexEntry(
            id: QueueID(sequence: uint64(8), random: buffer.getInteger(at: offset + 2, as: UInt16.self)!),
            arrival: int64(16), size: Int(int64(24)), held: flags & 1 != 0, delayWarned: flags & 4 != 0,
            dataInFile: flags & 2 != 0, isFinal: flags & 8 != 0, recipientCount: uint32(4), segment: uint64(32),
            offset: int64(40), headLength: uint32(64), stateSegment: uint64(48), stateOffset: int64(56),
            stateLength: uint32(68), dueAt: int64(72))
    }
}

/// The queue's index of live messages: an open-addressing hash table (linear probing, at most
/// half full) in the file `index` of the queue directory, read and written with `pread` and
/// `pwrite` one slot at a time. SPEC §2.2 asks that a queue of millions of messages not mean
/// millions of objects in memory; here it means a bigger file, whose pages the kernel caches
/// as it sees fit.
///
/// The file is derived state: it is rebuilt from the log every time the queue is opened, so it
/// is never synced, and a crash cannot leave it inconsistent with the log. Not thread-safe: the
/// store uses it under its lock.
final class QueueIndex {
    let path: String
    private var fd: CInt
    /// Slots; a power of two.
    private(set) var capacity: Int
    private(set) var count = 0

    /// Creates an empty index in `path`, replacing whatever file was there.
    init(path: String, capacity: Int = 1024) throws {
        self.path = path
        var slots = 16
        while slots < capacity { slots *= 2 }
        self.capacity = slots
        fd = try SystemCalls.open(path, O_RDWR | O_CREAT | O_TRUNC)
        do {
            try Self.allocate(fd, octets: self.capacity * IndexEntry.size, path: path)
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    deinit { close() }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    /// Zeroed space for the whole table, allocated now: a write into a slot can then not fail
    /// for want of space after the record it describes is already durable.
    private static func allocate(_ fd: CInt, octets: Int, path: String) throws {
        let result = posix_fallocate(fd, 0, off_t(octets))
        if result == 0 { return }
        guard result == EOPNOTSUPP || result == EINVAL else {
            throw QueueError.storage(errno: result, "allocate \(path)")
        }
        try SystemCalls.truncate(fd, to: Int64(octets), path: path)
    }

    private func home(_ id: QueueID) -> Int {
        // SplitMix64's finaliser: the sequence's low bits alone are a counter and a clock.
        var hash = id.sequence ^ (UInt64(id.random) << 48)
        hash = (hash ^ (hash >> 30)) &* 0xBF58_476D_1CE4_E5B9
        hash = (hash ^ (hash >> 27)) &* 0x94D0_49BB_1331_11EB
        hash ^= hash >> 31
        return Int(hash & UInt64(capacity - 1))
    }

    private func readSlot(_ position: Int) throws -> IndexEntry? {
        var buffer = ByteBuffer()
        try SystemCalls.read(
            fd, into: &buffer, count: IndexEntry.size, at: Int64(position * IndexEntry.size), path: path)
        guard buffer.readableBytes == IndexEntry.size else {
            throw QueueError.corrupt("\(path) is shorter than its table")
        }
        return IndexEntry.decode(buffer, at: 0)
    }

    private func writeSlot(_ position: Int, _ entry: IndexEntry?) throws {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(IndexEntry.size)
        if let entry {
            entry.encode(into: &buffer)
        } else {
            buffer.writeRepeatingByte(0, count: IndexEntry.size)
        }
        try SystemCalls.write(fd, buffer, at: Int64(position * IndexEntry.size), path: path)
    }

    /// The slot holding `id`, or the empty slot where it would go.
    private func find(_ id: QueueID) throws -> (position: Int, entry: IndexEntry?) {
        var position = home(id)
        while true {
            guard let entry = try readSlot(position) else { return (position, nil) }
            if entry.id == id { return (position, entry) }
            position = (position + 1) & (capacity - 1)
        }
    }

    func lookup(_ id: QueueID) throws -> IndexEntry? {
        try find(id).entry
    }

    /// Inserts the entry, or replaces the one with the same ID. Call `reserve` first: the table
    /// must not fill.
    func store(_ entry: IndexEntry) throws {
        let (position, old) = try find(entry.id)
        precondition(old != nil || count < capacity - 1, "queue index full: reserve was not called")
        try writeSlot(position, entry)
        if old == nil { count += 1 }
    }

    /// Removes and returns the entry for `id`. Later entries of the same probe run move back
    /// (backward-shift deletion), so the table never holds tombstones.
    @discardableResult
    func remove(_ id: QueueID) throws -> IndexEntry? {
        var (hole, removed) = try find(id)
        guard let removed else { return nil }
        let mask = capacity - 1
        var position = hole
        while true {
            position = (position + 1) & mask
            guard let entry = try readSlot(position) else { break }
            let wanted = home(entry.id)
            // The entry may fill the hole unless its home lies cyclically in (hole, position].
            let stays = hole <= position ? (wanted > hole && wanted <= position) : (wanted > hole || wanted <= position)
            if !stays {
                try writeSlot(hole, entry)
                hole = position
            }
        }
        try writeSlot(hole, nil)
        count -= 1
        return removed
    }

    /// Grows the table, if needed, so that `additional` more entries keep it at most half full.
    /// Throws a storage error (a full disk) without changing anything.
    func reserve(additional: Int) throws {
        let needed = (count + additional) * 2
        guard needed > capacity else { return }
        var newCapacity = capacity
        while newCapacity < needed { newCapacity *= 2 }
        let newPath = path + ".new"
        let grown = try QueueIndex(path: newPath, capacity: newCapacity)
        do {
            try forEach { entry in
                try grown.store(entry)
                return true
            }
            guard rename(newPath, path) == 0 else { throw QueueError.storage("rename \(newPath)") }
        } catch {
            grown.close()
            unlink(newPath)
            throw error
        }
        close()
        fd = grown.fd
        grown.fd = -1
        capacity = newCapacity
    }

    /// Calls `body` with every entry of the slots (all of them by default) in table order until
    /// it returns false, reading 64 KiB of the table at a time. `body` must not change the index.
    func forEach(slots range: Range<Int>? = nil, _ body: (IndexEntry) throws -> Bool) throws {
        let slotsPerRead = 819
        let end = min(capacity, range?.upperBound ?? capacity)
        var position = max(0, range?.lowerBound ?? 0)
        var buffer = ByteBuffer()
        while position < end {
            let slots = min(slotsPerRead, end - position)
            buffer.clear()
            try SystemCalls.read(
                fd, into: &buffer, count: slots * IndexEntry.size, at: Int64(position * IndexEntry.size), path: path)
            guard buffer.readableBytes == slots * IndexEntry.size else {
                throw QueueError.corrupt("\(path) is shorter than its table")
            }
            for slot in 0..<slots {
                if let entry = IndexEntry.decode(buffer, at: slot * IndexEntry.size), try !body(entry) { return }
            }
            position += slots
        }
    }
}
