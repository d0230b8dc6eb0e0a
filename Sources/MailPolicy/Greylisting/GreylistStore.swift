import Glibc
import Logging

/// The greylist on disk: a snapshot `greylist.db` and an append-only `greylist.log` of changes
/// made since, both a header and fixed-size records, each record carrying the whole state of
/// one entry (so replaying keeps the last one) and its own CRC-32C.
///
/// A save appends the changed entries to the log and fsyncs it: a crash loses at most the
/// changes since the last save. When the log has grown large, the table is written whole as the next snapshot (temporary file, fsync, rename, directory fsync) and a
/// new empty log is started the same way. Both headers carry a generation number: a log
/// counts only for the snapshot of its own generation, so a crash between the two renames
/// leaves a newer snapshot and a stale log that is ignored (its changes are in the snapshot).
///
/// A torn last record (a crash during an append) is dropped quietly. Anything else that does
/// not read back — a bad header, a bad record before the end — sets the file aside as
/// `<name>.bad`, logged as an error, and the greylist goes on with what it could read.
struct GreylistStore {
    static let snapshotName = "greylist.db"
    static let logName = "greylist.log"
    static let magic: [UInt8] = Array("TernGrey".utf8)
    static let version: UInt32 = 1
    static let headerSize = 24
    static let recordSize = 48

    let directory: String
    /// The generation of the snapshot on disk, and of the log once it is open.
    var generation: UInt64 = 0
    /// The log, open for appending; nil until the next compaction writes a fresh one.
    var log: CInt?
    var logSize: Int64 = 0
    var logRecords = 0

    var snapshotPath: String { directory + "/" + Self.snapshotName }
    var logPath: String { directory + "/" + Self.logName }

    init(directory: String) {
        self.directory = directory
    }

    // MARK: - Loading

    /// Reads the snapshot, then the log of the same generation, into `table`. Files that do
    /// not read back are set aside; only a directory that cannot be made or read throws.
    mutating func load(into table: inout GreylistTable, logger: Logger) throws(GreylistError) {
        try GreylistFile.makeDirectory(directory)
        var snapshotGeneration: UInt64?
        switch try readFile(snapshotPath, into: &table, logger: logger) {
        case .missing:
            break
        case .read(let generation, let problem):
            if let problem {
                setAside(snapshotPath, problem: problem, logger: logger)
            } else {
                snapshotGeneration = generation
            }
            self.generation = generation ?? 0
        }
        // The log is replayed after the snapshot, so each key ends with its latest state.
        var logTable = GreylistTable()
        switch try readFile(logPath, into: &logTable, logger: logger) {
        case .missing:
            break
        case .read(let generation, let problem):
            if let problem { setAside(logPath, problem: problem, logger: logger) }
            if let generation, snapshotGeneration == nil || snapshotGeneration == generation {
                table.triplets.merge(logTable.triplets) { _, newer in newer }
                table.clients.merge(logTable.clients) { _, newer in newer }
                self.generation = max(self.generation, generation)
            } else if generation != nil {
                logger.info(
                    "greylist log older than its snapshot ignored (a compaction was interrupted)",
                    metadata: ["event": "greylist", "file": "\(logPath)"])
            }
        }
    }

    private enum ReadResult {
        case missing
        /// The header's generation (nil when the header was bad) and what was wrong, if anything.
        case read(generation: UInt64?, problem: String?)
    }

    private func readFile(_ path: String, into table: inout GreylistTable, logger: Logger) throws(GreylistError)
        -> ReadResult
    {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return .missing }
            throw GreylistError(operation: "open", path: path, code: errno)
        }
        defer { close(fd) }
        var reader = GreylistFile.Reader(fd: fd, path: path)
        let header = try reader.read(count: Self.headerSize)
        guard header.count == Self.headerSize, let generation = Self.decodeHeader(header) else {
            return .read(generation: nil, problem: header.isEmpty ? "empty file" : "bad header")
        }
        var index = 0
        while true {
            let record = try reader.read(count: Self.recordSize)
            if record.isEmpty { return .read(generation: generation, problem: nil) }
            guard record.count == Self.recordSize, Self.decode(record, into: &table) else {
                // A bad last record is a torn append, which a crash may leave; earlier ones are not.
                if try reader.read(count: 1).isEmpty {
                    logger.notice(
                        "greylist: incomplete last record dropped (torn write)",
                        metadata: ["event": "greylist", "file": "\(path)", "record": "\(index)"])
                    return .read(generation: generation, problem: nil)
                }
                return .read(generation: generation, problem: "bad record \(index)")
            }
            index += 1
        }
    }

    private func setAside(_ path: String, problem: String, logger: Logger) {
        let bad = path + ".bad"
        let moved = rename(path, bad) == 0
        if moved { try? GreylistFile.syncDirectory(directory) }
        logger.error(
            "greylist file unreadable; set aside, continuing with what could be read",
            metadata: [
                "event": "greylist", "file": "\(path)", "problem": "\(problem)",
                "moved_to": "\(moved ? bad : "(rename failed: errno \(errno))")",
            ])
    }

    // MARK: - Writing

    /// Appends the current state of `keys` to the log and makes it durable. On failure the log
    /// is cut back to where it was, so that a half-written record never precedes later ones.
    mutating func append(
        triplets: [(GreylistKey, GreylistEntry)], clients: [(GreylistKey, GreylistClient)]
    ) throws(GreylistError) {
        guard let log else { throw GreylistError(operation: "append to", path: logPath, code: EBADF) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity((triplets.count + clients.count) * Self.recordSize)
        for (key, entry) in triplets { Self.encode(key, entry, into: &bytes) }
        for (key, client) in clients { Self.encode(key, client, into: &bytes) }
        guard !bytes.isEmpty else { return }
        do throws(GreylistError) {
            try GreylistFile.write(fd: log, bytes, path: logPath)
            try GreylistFile.sync(fd: log, path: logPath)
        } catch {
            _ = ftruncate(log, off_t(logSize))
            throw error
        }
        logSize += Int64(bytes.count)
        logRecords += triplets.count + clients.count
    }

    /// Writes `table` whole as the snapshot of the next generation, then an empty log of that
    /// generation, each atomically. After a failure `log` is nil and the caller must compact
    /// again before appending: the log on disk may belong to an older snapshot.
    mutating func compact(_ table: GreylistTable) throws(GreylistError) {
        closeLog()
        let next = generation + 1
        var bytes = Self.header(generation: next)
        bytes.reserveCapacity(Self.headerSize + (table.triplets.count + table.clients.count) * Self.recordSize)
        for (key, entry) in table.triplets { Self.encode(key, entry, into: &bytes) }
        for (key, client) in table.clients { Self.encode(key, client, into: &bytes) }
        try GreylistFile.replace(snapshotPath, with: bytes, directory: directory)
        generation = next
        try GreylistFile.replace(logPath, with: Self.header(generation: next), directory: directory)
        let fd = open(logPath, O_WRONLY | O_APPEND | O_CLOEXEC)
        guard fd >= 0 else { throw GreylistError(operation: "open", path: logPath, code: errno) }
        log = fd
        logSize = Int64(Self.headerSize)
        logRecords = 0
    }

    mutating func closeLog() {
        if let log { close(log) }
        log = nil
    }

    // MARK: - Format

    // header = magic(8) generation(8, LE) version(4, LE) crc32c-of-the-20-before(4, LE)
    static func header(generation: UInt64) -> [UInt8] {
        var bytes = magic
        appendLittleEndian(generation, to: &bytes)
        appendLittleEndian(version, to: &bytes)
        appendLittleEndian(CRC32C.checksum(bytes), to: &bytes)
        return bytes
    }

    static func decodeHeader(_ bytes: [UInt8]) -> UInt64? {
        guard bytes.count == headerSize, Array(bytes[0..<8]) == magic,
            readLittleEndian(bytes, at: 16, as: UInt32.self) == version,
            readLittleEndian(bytes, at: 20, as: UInt32.self) == CRC32C.checksum(bytes[0..<20])
        else { return nil }
        return readLittleEndian(bytes, at: 8, as: UInt64.self)
    }

    // record = kind(1) zero(3) passes(4) key(16) time1(8) time2(8) zero(4) crc32c-of-the-44-before(4)
    // kind 1: waiting triplet, 2: passed triplet (time1 created, time2 last seen);
    // kind 3: client network (time1 last counted). All integers little-endian.
    static func encode(_ key: GreylistKey, _ entry: GreylistEntry, into bytes: inout [UInt8]) {
        encode(kind: entry.passed ? 2 : 1, passes: 0, key, entry.created, entry.lastSeen, into: &bytes)
    }

    static func encode(_ key: GreylistKey, _ client: GreylistClient, into bytes: inout [UInt8]) {
        encode(kind: 3, passes: client.passes, key, client.lastCounted, 0, into: &bytes)
    }

    private static func encode(
        kind: UInt8, passes: UInt32, _ key: GreylistKey, _ time1: Int64, _ time2: Int64, into bytes: inout [UInt8]
    ) {
        let start = bytes.count
        bytes += [kind, 0, 0, 0]
        appendLittleEndian(passes, to: &bytes)
        appendLittleEndian(key.high, to: &bytes)
        appendLittleEndian(key.low, to: &bytes)
        appendLittleEndian(UInt64(bitPattern: time1), to: &bytes)
        appendLittleEndian(UInt64(bitPattern: time2), to: &bytes)
        bytes += [0, 0, 0, 0]
        appendLittleEndian(CRC32C.checksum(bytes[start...]), to: &bytes)
    }

    /// Applies one record to `table`; false when it is not a valid record.
    static func decode(_ bytes: [UInt8], into table: inout GreylistTable) -> Bool {
        guard bytes.count == recordSize,
            readLittleEndian(bytes, at: 44, as: UInt32.self) == CRC32C.checksum(bytes[0..<44])
        else { return false }
        let key = GreylistKey(
            high: readLittleEndian(bytes, at: 8, as: UInt64.self), low: readLittleEndian(bytes, at: 16, as: UInt64.self)
        )
        let time1 = Int64(bitPattern: readLittleEndian(bytes, at: 24, as: UInt64.self))
        let time2 = Int64(bitPattern: readLittleEndian(bytes, at: 32, as: UInt64.self))
        switch bytes[0] {
        case 1, 2:
            table.triplets[key] = GreylistEntry(created: time1, lastSeen: time2, passed: bytes[0] == 2)
        case 3:
            table.clients[key] = GreylistClient(
                passes: readLittleEndian(bytes, at: 4, as: UInt32.self), lastCounted: time1)
        default:
            return false
        }
        return true
    }

    private static func appendLittleEndian<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8]) {
        for index in 0..<(T.bitWidth / 8) { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * index))) }
    }

    private static func readLittleEndian<T: FixedWidthInteger>(_ bytes: [UInt8], at offset: Int, as: T.Type) -> T {
        (0..<(T.bitWidth / 8)).reduce(T(0)) { $0 | T(bytes[offset + $1]) << (8 * $1) }
    }
}

/// Why the greylist could not be read or written; `description` names the call and the file.
public struct GreylistError: Error, Sendable, Hashable, CustomStringConvertible {
    public var operation: String
    public var path: String
    /// The `errno` value.
    public var code: Int32

    public init(operation: String, path: String, code: Int32) {
        self.operation = operation
        self.path = path
        self.code = code
    }

    public var description: String { "cannot \(operation) \(path): \(String(cString: strerror(code)))" }
}

/// The few POSIX calls the store makes, retried on EINTR.
enum GreylistFile {
    /// Reads a file front to back through a buffer, so that a million records do not take a
    /// million system calls.
    struct Reader {
        let fd: CInt
        let path: String
        private var buffer: [UInt8] = []
        private var position = 0
        private var atEnd = false

        init(fd: CInt, path: String) {
            self.fd = fd
            self.path = path
        }

        /// Up to `count` bytes; fewer only at the end of the file.
        mutating func read(count: Int) throws(GreylistError) -> [UInt8] {
            while buffer.count - position < count, !atEnd { try fill() }
            let end = min(buffer.count, position + count)
            defer { position = end }
            return Array(buffer[position..<end])
        }

        private mutating func fill() throws(GreylistError) {
            buffer.removeFirst(position)
            position = 0
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let got = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
                if got < 0 {
                    if errno == EINTR { continue }
                    throw GreylistError(operation: "read", path: path, code: errno)
                }
                if got == 0 { atEnd = true }
                buffer += chunk[0..<got]
                return
            }
        }
    }

    static func write(fd: CInt, _ bytes: [UInt8], path: String) throws(GreylistError) {
        var done = 0
        while done < bytes.count {
            let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, bytes.count - done) }
            if written < 0 {
                if errno == EINTR { continue }
                throw GreylistError(operation: "write", path: path, code: errno)
            }
            if written == 0 { throw GreylistError(operation: "write", path: path, code: EIO) }
            done += written
        }
    }

    static func sync(fd: CInt, path: String) throws(GreylistError) {
        while fsync(fd) != 0 {
            if errno != EINTR { throw GreylistError(operation: "fsync", path: path, code: errno) }
        }
    }

    /// Replaces `path` whole or not at all: a temporary file beside it, fsynced, renamed over
    /// it, and the directory fsynced so that the rename survives a crash.
    static func replace(_ path: String, with bytes: [UInt8], directory: String) throws(GreylistError) {
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw GreylistError(operation: "create", path: temporary, code: errno) }
        do throws(GreylistError) {
            try write(fd: fd, bytes, path: temporary)
            try sync(fd: fd, path: temporary)
        } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
        close(fd)
        guard rename(temporary, path) == 0 else {
            let code = errno
            unlink(temporary)
            throw GreylistError(operation: "rename to", path: path, code: code)
        }
        try syncDirectory(directory)
    }

    static func syncDirectory(_ path: String) throws(GreylistError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw GreylistError(operation: "open", path: path, code: errno) }
        defer { close(fd) }
        try sync(fd: fd, path: path)
    }

    /// Creates `path` (not its parents) if it is missing, and makes the new entry durable.
    static func makeDirectory(_ path: String) throws(GreylistError) {
        if mkdir(path, 0o700) == 0 {
            var parent = path
            while parent.count > 1, parent.hasSuffix("/") { parent.removeLast() }
            if let slash = parent.lastIndex(of: "/") {
                parent = slash == parent.startIndex ? "/" : String(parent[..<slash])
            } else {
                parent = "."
            }
            try syncDirectory(parent)
        } else if errno != EEXIST {
            throw GreylistError(operation: "create directory", path: path, code: errno)
        }
    }
}

/// CRC-32C (Castagnoli, RFC 3720 §B.4), the checksum of each greylist record: it catches the
/// torn and flipped bits a crash or a bad disk leaves. Bytewise; records are 44 bytes.
private enum CRC32C {
    private static let table: [UInt32] = (0...255).map { byte in
        var crc = UInt32(byte)
        for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        return crc
    }

    static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var crc = ~UInt32(0)
        for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return ~crc
    }
}
