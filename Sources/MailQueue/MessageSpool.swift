import Foundation
import Glibc
import NIOCore

/// One message being received. The first `Options.spoolMemoryLimit` octets stay in memory (most
/// mail is small); past that the data goes to `spool/<ID>` as it streams in, written in blocks of
/// that size and never synced: until `QueueStore.commit` returns, the message is not acknowledged
/// and may be lost.
///
/// One owner at a time: the SMTP session that receives the message. (The lock only makes the
/// `Sendable` claim true; it is not meant for concurrent writers.)
public final class MessageSpool: @unchecked Sendable {
    public let id: QueueID
    let path: String
    private let memoryLimit: Int
    private let lock = NSLock()
    /// Data not yet written to the spool file (all of it while `fd < 0`).
    private var pending: ByteBuffer
    private var fd: CInt = -1
    /// Octets already in the spool file.
    private var written = 0
    private var finished = false

    init(id: QueueID, path: String, memoryLimit: Int) {
        self.id = id
        self.path = path
        self.memoryLimit = memoryLimit
        self.pending = ByteBuffer()
    }

    deinit {
        if !finished { discardLocked() }
    }

    /// Octets written so far.
    public var byteCount: Int {
        lock.withLock { written + pending.readableBytes }
    }

    /// Appends message data.
    public func write(_ bytes: ByteBuffer) throws {
        try lock.withLock {
            guard !finished else { throw QueueError.spoolFinished(id) }
            if fd < 0 && pending.readableBytes + bytes.readableBytes <= memoryLimit {
                pending.writeImmutableBuffer(bytes)
                return
            }
            if fd < 0 { fd = try SystemCalls.open(path, O_RDWR | O_CREAT | O_TRUNC) }
            pending.writeImmutableBuffer(bytes)
            if pending.readableBytes >= memoryLimit { try flushLocked() }
        }
    }

    /// Replaces the first `length` octets with `bytes`: header fields that only the end of the
    /// content decides (`Authentication-Results:`, a DKIM signature, a rule's tag) go before
    /// the message, and fields claiming our checks are taken out. Free while the message is in
    /// memory; a message already in its file is copied once, behind the new octets, into a new
    /// file that replaces it.
    public func replacePrefix(length: Int, with bytes: ByteBuffer) throws {
        try lock.withLock {
            guard !finished else { throw QueueError.spoolFinished(id) }
            precondition(length >= 0 && length <= written + pending.readableBytes, "prefix beyond the message")
            guard fd >= 0 else {
                var joined = ByteBuffer()
                joined.reserveCapacity(bytes.readableBytes + pending.readableBytes - length)
                joined.writeImmutableBuffer(bytes)
                joined.writeImmutableBuffer(
                    pending.getSlice(at: pending.readerIndex + length, length: pending.readableBytes - length)!)
                pending = joined
                return
            }
            try flushLocked()
            let newPath = path + ".new"
            let target = try SystemCalls.open(newPath, O_RDWR | O_CREAT | O_TRUNC)
            do {
                try SystemCalls.write(target, bytes, at: 0, path: newPath)
                var offset = length
                while offset < written {
                    var block = ByteBuffer()
                    let count = min(max(memoryLimit, 65536), written - offset)
                    try SystemCalls.read(fd, into: &block, count: count, at: Int64(offset), path: path)
                    guard block.readableBytes == count else {
                        throw QueueError.storage(errno: EIO, "short read \(path)")
                    }
                    try SystemCalls.write(
                        target, block, at: Int64(bytes.readableBytes + offset - length), path: newPath)
                    offset += count
                }
                guard rename(newPath, path) == 0 else { throw QueueError.storage("rename \(newPath) to \(path)") }
            } catch {
                close(target)
                unlink(newPath)
                throw error
            }
            close(fd)
            fd = target
            written += bytes.readableBytes - length
        }
    }

    /// Up to `limit` octets from the start of the message, for a content filter.
    public func prefix(_ limit: Int) throws -> ByteBuffer {
        try lock.withLock {
            guard !finished else { throw QueueError.spoolFinished(id) }
            guard fd >= 0 else {
                return pending.getSlice(at: pending.readerIndex, length: min(limit, pending.readableBytes))!
            }
            var bytes = ByteBuffer()
            let fromFile = min(limit, written)
            try SystemCalls.read(fd, into: &bytes, count: fromFile, at: 0, path: path)
            guard bytes.readableBytes == fromFile else { throw QueueError.storage(errno: EIO, "short read \(path)") }
            if limit > fromFile {
                bytes.writeImmutableBuffer(
                    pending.getSlice(at: pending.readerIndex, length: min(limit - fromFile, pending.readableBytes))!)
            }
            return bytes
        }
    }

    /// Drops the message (transaction aborted, or commit failed). Does nothing after a commit.
    public func discard() {
        lock.withLock {
            if !finished { discardLocked() }
        }
    }

    private func discardLocked() {
        finished = true
        pending = ByteBuffer()
        if fd >= 0 {
            close(fd)
            fd = -1
            unlink(path)
        }
    }

    private func flushLocked() throws {
        guard pending.readableBytes > 0 else { return }
        try SystemCalls.write(fd, pending, at: Int64(written), path: path)
        written += pending.readableBytes
        pending.clear()
    }

    // MARK: Used by QueueStore.commit

    /// All the data, for a message small enough to go inline into the log.
    func contents() throws -> ByteBuffer {
        try lock.withLock {
            guard !finished else { throw QueueError.spoolFinished(id) }
            guard fd >= 0 else { return pending }
            var all = ByteBuffer()
            all.reserveCapacity(written + pending.readableBytes)
            let reader = try SystemCalls.open(path, O_RDONLY)
            defer { close(reader) }
            try SystemCalls.read(reader, into: &all, count: written, at: 0, path: path)
            guard all.readableBytes == written else { throw QueueError.storage(errno: EIO, "short read \(path)") }
            all.writeImmutableBuffer(pending)
            return all
        }
    }

    /// Syncs the spool file and renames it to `target` (a large message keeps its own file).
    /// The caller syncs the target's directory. The spool is finished afterwards.
    func move(to target: String) throws {
        try lock.withLock {
            guard !finished else { throw QueueError.spoolFinished(id) }
            if fd < 0 { fd = try SystemCalls.open(path, O_RDWR | O_CREAT | O_TRUNC) }
            try flushLocked()
            try SystemCalls.dataSync(fd, path: path)
            guard rename(path, target) == 0 else { throw QueueError.storage("rename \(path) to \(target)") }
            close(fd)
            fd = -1
            finished = true
            pending = ByteBuffer()
        }
    }

    /// The message is in the log: the spool file is no longer needed.
    func committed() {
        lock.withLock {
            finished = true
            pending = ByteBuffer()
            if fd >= 0 {
                close(fd)
                fd = -1
                unlink(path)
            }
        }
    }
}

/// Streams a queued message's data from where it lives: its MESSAGE record in a log segment,
/// or its own file. The reader keeps the file open, so the data stays readable even if the
/// message is removed (and its segment or file deleted) while it is being read.
public final class MessageDataReader: @unchecked Sendable {
    /// Octets of message data in all.
    public let size: Int
    private let lock = NSLock()
    private var fd: CInt
    private let path: String
    private let start: Int64
    private var position = 0

    init(fd: CInt, path: String, start: Int64, size: Int) {
        self.fd = fd
        self.path = path
        self.start = start
        self.size = size
    }

    deinit {
        if fd >= 0 { Glibc.close(fd) }
    }

    /// The next chunk of at most `maxBytes` octets, or nil at the end of the data.
    public func next(maxBytes: Int = 64 * 1024) throws -> ByteBuffer? {
        try lock.withLock {
            guard fd >= 0 else { throw QueueError.closed }
            let count = min(maxBytes, size - position)
            guard count > 0 else { return nil }
            var chunk = ByteBuffer()
            try SystemCalls.read(fd, into: &chunk, count: count, at: start + Int64(position), path: path)
            guard chunk.readableBytes == count else {
                throw QueueError.storage(errno: EIO, "\(path) ends before the message data")
            }
            position += count
            return chunk
        }
    }

    /// Closes the file early (deinit closes it otherwise).
    public func close() {
        lock.withLock {
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
        }
    }
}
