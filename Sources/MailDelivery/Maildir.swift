import Foundation
import NIOConcurrencyHelpers
import NIOCore

#if canImport(Glibc)
    import Glibc
#endif

/// One Maildir (https://cr.yp.to/proto/maildir.html, SPEC §1.3): a message is written to
/// `tmp/`, fsynced, renamed into `new/`, and the directory fsynced, so that a crash leaves
/// either no message or a whole one, never half.
public struct Maildir: Sendable {
    public let path: String

    public init(path: String) {
        self.path = path
    }

    /// Writes a message whose octets come from `chunks` (called until it returns nil) after
    /// `prefix` (trace headers) and returns the file name in `new/`.
    public func deliver(
        prefix: String, hostname: String, chunks: () throws -> ByteBuffer?
    ) throws(MaildirError) -> String {
        try createDirectories()
        let name = Self.uniqueName(hostname: hostname)
        let temporary = "\(path)/tmp/\(name)"
        let final = "\(path)/new/\(name)"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw MaildirError.system("open \(temporary)", errno) }
        var closed = false
        defer {
            if !closed { close(descriptor) }
        }
        do {
            var buffer = ByteBuffer(string: prefix)
            try writeAll(descriptor, &buffer, temporary)
            while var chunk = try chunks() {
                try writeAll(descriptor, &chunk, temporary)
            }
        } catch let error as MaildirError {
            unlink(temporary)
            throw error
        } catch {
            unlink(temporary)
            throw MaildirError.source(String(describing: error))
        }
        guard fsync(descriptor) == 0 else {
            let code = errno
            unlink(temporary)
            throw MaildirError.system("fsync \(temporary)", code)
        }
        closed = true
        close(descriptor)
        guard rename(temporary, final) == 0 else {
            let code = errno
            unlink(temporary)
            throw MaildirError.system("rename to \(final)", code)
        }
        try Self.syncDirectory("\(path)/new")
        return name
    }

    private func writeAll(_ descriptor: Int32, _ buffer: inout ByteBuffer, _ file: String) throws(MaildirError) {
        while buffer.readableBytes > 0 {
            let written = buffer.withUnsafeReadableBytes { write(descriptor, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                throw MaildirError.system("write \(file)", errno)
            }
            buffer.moveReaderIndex(forwardBy: written)
        }
    }

    /// Creates `path` and its `tmp`, `new`, `cur` the first time, fsyncing each parent so the
    /// new directories survive a crash with the message in them.
    private func createDirectories() throws(MaildirError) {
        var isDirectory = stat()
        if stat("\(path)/new", &isDirectory) == 0 { return }
        try Self.makeDirectories(path)
        for sub in ["tmp", "new", "cur"] {
            if mkdir("\(path)/\(sub)", 0o700) != 0 && errno != EEXIST {
                throw MaildirError.system("mkdir \(path)/\(sub)", errno)
            }
        }
        try Self.syncDirectory(path)
    }

    /// `mkdir -p`, fsyncing the parent of every directory it creates.
    static func makeDirectories(_ path: String) throws(MaildirError) {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            let parent = current.isEmpty ? "/" : current
            current += "/\(component)"
            if mkdir(current, 0o700) == 0 {
                try syncDirectory(parent)
            } else if errno != EEXIST {
                throw MaildirError.system("mkdir \(current)", errno)
            }
        }
    }

    static func syncDirectory(_ path: String) throws(MaildirError) {
        let descriptor = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw MaildirError.system("open \(path)", errno) }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw MaildirError.system("fsync \(path)", errno) }
    }

    /// `time.M<usec>P<pid>Q<n>.host`: unique per delivery on this host (Maildir's rule), with a
    /// process-wide counter for deliveries within the same microsecond.
    static func uniqueName(hostname: String) -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let sequence = counter.next()
        let host = hostname.replacingOccurrences(of: "/", with: "\\057").replacingOccurrences(of: ":", with: "\\072")
        return "\(now.tv_sec).M\(now.tv_nsec / 1000)P\(getpid())Q\(sequence).\(host)"
    }

    private static let counter = DeliveryCounter()
}

private final class DeliveryCounter: @unchecked Sendable {
    private var value = 0
    private let lock = NIOLock()

    func next() -> Int {
        lock.withLock {
            value += 1
            return value
        }
    }
}

public enum MaildirError: Error, Sendable, CustomStringConvertible {
    case system(String, Int32)
    case source(String)

    public var description: String {
        switch self {
        case .system(let what, let code): return "\(what): \(String(cString: strerror(code)))"
        case .source(let what): return "reading the queued message: \(what)"
        }
    }

    /// ENOSPC/EDQUOT are worth retrying later; so is almost everything else on a local disk.
    public var isTemporary: Bool { true }
}
