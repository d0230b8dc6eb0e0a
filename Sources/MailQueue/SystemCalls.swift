import Glibc
import NIOCore

/// The few POSIX calls the queue makes, each retried on EINTR and turned into a `QueueError`
/// that names the operation and the file.
enum SystemCalls {
    static func open(_ path: String, _ flags: CInt, mode: mode_t = 0o600) throws -> CInt {
        while true {
            let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
            if fd >= 0 { return fd }
            if errno != EINTR { throw QueueError.storage("open \(path)") }
        }
    }

    /// Writes all of `bytes` at `offset` (pwrite may write less than asked, e.g. as the disk fills).
    static func write(_ fd: CInt, _ bytes: UnsafeRawBufferPointer, at offset: Int64, path: String) throws {
        var done = 0
        while done < bytes.count {
            let written = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if written < 0 {
                if errno == EINTR { continue }
                throw QueueError.storage("write \(path)")
            }
            if written == 0 { throw QueueError.storage(errno: EIO, "write \(path) (wrote nothing)") }
            done += written
        }
    }

    static func write(_ fd: CInt, _ buffer: ByteBuffer, at offset: Int64, path: String) throws {
        try buffer.withUnsafeReadableBytes { try write(fd, $0, at: offset, path: path) }
    }

    /// Reads up to `count` octets at `offset` (fewer only at the end of the file).
    static func read(_ fd: CInt, into buffer: inout ByteBuffer, count: Int, at offset: Int64, path: String) throws {
        var done = 0
        buffer.reserveCapacity(minimumWritableBytes: count)
        while done < count {
            let got = try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count - done) { target in
                while true {
                    let got = pread(fd, target.baseAddress!, count - done, off_t(offset) + off_t(done))
                    if got >= 0 { return got }
                    if errno != EINTR { throw QueueError.storage("read \(path)") }
                }
            }
            if got == 0 { break }
            done += got
        }
    }

    static func dataSync(_ fd: CInt, path: String) throws {
        while fdatasync(fd) != 0 {
            if errno != EINTR { throw QueueError.storage("fdatasync \(path)") }
        }
    }

    static func fileSync(_ fd: CInt, path: String) throws {
        while fsync(fd) != 0 {
            if errno != EINTR { throw QueueError.storage("fsync \(path)") }
        }
    }

    /// Makes a directory's entries (created, renamed, removed files) durable.
    static func syncDirectory(_ path: String) throws {
        let fd = try open(path, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        try fileSync(fd, path: path)
    }

    static func truncate(_ fd: CInt, to length: Int64, path: String) throws {
        while ftruncate(fd, off_t(length)) != 0 {
            if errno != EINTR { throw QueueError.storage("truncate \(path)") }
        }
    }

    static func size(_ fd: CInt, path: String) throws -> Int64 {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw QueueError.storage("stat \(path)") }
        return Int64(info.st_size)
    }

    static func makeDirectory(_ path: String) throws {
        if mkdir(path, 0o700) != 0 && errno != EEXIST { throw QueueError.storage("mkdir \(path)") }
    }

    /// `mkdir -p`.
    static func makeDirectories(_ path: String) throws {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            prefix += "/" + component
            try makeDirectory(prefix)
        }
    }

    /// The names in a directory, without "." and "..".
    static func list(_ path: String) throws -> [String] {
        guard let directory = opendir(path) else { throw QueueError.storage("opendir \(path)") }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}
