import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#endif

/// Dovecot's passwd-file format (https://doc.dovecot.org/main/core/config/auth/databases/passwd_file.html):
/// one user per line, `user:{SCHEME}hash:uid:gid:gecos:home:shell:extra`, of which Tern reads the
/// first two fields. `#` starts a comment line. User names compare case-insensitively.
public enum PasswdFile {
    public struct Entry: Sendable, Hashable {
        public var user: String
        public var password: PasswordHash
    }

    /// A line that could not be used, for the log: its number and why (never its content).
    public struct Problem: Sendable, Hashable, CustomStringConvertible {
        public var line: Int
        public var reason: String
        public var description: String { "line \(line): \(reason)" }
    }

    public static func parse(_ text: String) -> (entries: [Entry], problems: [Problem]) {
        var entries: [Entry] = []
        var problems: [Problem] = []
        var seen = Set<String>()
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.hasSuffix("\r") ? rawLine.dropLast() : rawLine
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count >= 2, !fields[0].isEmpty else {
                problems.append(Problem(line: index + 1, reason: "expected user:{SCHEME}hash"))
                continue
            }
            let user = fields[0].lowercased()
            guard seen.insert(user).inserted else {
                problems.append(Problem(line: index + 1, reason: "user \(user) appears again; the first entry counts"))
                continue
            }
            do {
                entries.append(Entry(user: user, password: try PasswordHash(field: String(fields[1]))))
            } catch {
                problems.append(Problem(line: index + 1, reason: "user \(user): \(error)"))
            }
        }
        return (entries, problems)
    }

    /// `text` with `user`'s password set to `hash`: its line replaced in place (keeping any
    /// further fields), or a line appended. Comments and other users stay as they were.
    public static func setting(_ user: String, to hash: PasswordHash, in text: String) -> String {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        let key = user.lowercased()
        if let index = lines.firstIndex(where: { line in
            !line.hasPrefix("#") && line.split(separator: ":", maxSplits: 1).first?.lowercased() == key
        }) {
            var fields = lines[index].split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(
                String.init)
            fields[1] = hash.encoded
            lines[index] = fields.joined(separator: ":")
        } else {
            lines.append("\(key):\(hash.encoded)")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Whether a user name can be written to the file: no field separator, no line break, no
    /// controls, and not a comment.
    public static func isValidUserName(_ user: String) -> Bool {
        !user.isEmpty && !user.hasPrefix("#") && user.utf8.count <= 320
            && !user.unicodeScalars.contains { $0 == ":" || $0.value < 0x21 || $0.value == 0x7F }
    }
}

/// The users of `[auth] passwd_file`, read again whenever the file changes (`tern user add`
/// takes effect at once, without a reload). A file that cannot be read keeps the users last
/// read; a file that does not exist yet has none.
public final class UserDatabase: Sendable {
    private struct Stamp: Equatable {
        var device: UInt64
        var inode: UInt64
        var size: Int64
        var modified: Int
        var modifiedNanoseconds: Int
    }

    private struct State {
        var stamp: Stamp?
        var users: [String: PasswordHash] = [:]
    }

    public let path: String
    private let state = NIOLockedValueBox(State())
    private let report: @Sendable (String) -> Void

    /// `report` hears about unusable lines and unreadable files (line numbers and reasons,
    /// never a password or hash).
    public init(path: String, report: @escaping @Sendable (String) -> Void = { _ in }) {
        self.path = path
        self.report = report
        refresh()
    }

    /// The stored password of `user` (any case), nil when there is no such user.
    public func password(of user: String) -> PasswordHash? {
        refresh()
        return state.withLockedValue { $0.users[user.lowercased()] }
    }

    /// Whether `user` (any case) is in the file.
    public func contains(_ user: String) -> Bool {
        password(of: user) != nil
    }

    /// Checks a login: true only for a known user whose password matches. Costs a crypt(3)
    /// computation, milliseconds by design: call it off the event loop.
    public func verify(user: String, password: String) -> Bool {
        guard let stored = self.password(of: user) else {
            // Spend the same time as for a real user, so that timing does not tell which exist.
            _ = Self.decoy?.matches(password)
            return false
        }
        return stored.matches(password)
    }

    private static let decoy = PasswordHash.make(password: "decoy", scheme: .sha512Crypt)

    /// Reads the file again if it changed since the last read.
    public func refresh() {
        var info = stat()
        guard stat(path, &info) == 0 else {
            let missing = errno == ENOENT
            state.withLockedValue { state in
                if missing, state.stamp != nil || !state.users.isEmpty {
                    state = State()
                }
            }
            return
        }
        let stamp = Stamp(
            device: UInt64(info.st_dev), inode: UInt64(info.st_ino), size: Int64(info.st_size),
            modified: info.st_mtim.tv_sec, modifiedNanoseconds: info.st_mtim.tv_nsec)
        guard state.withLockedValue({ $0.stamp != stamp }) else { return }
        guard let text = Self.readFile(path) else {
            report("passwd file \(path) unreadable: \(String(cString: strerror(errno)))")
            return
        }
        let (entries, problems) = PasswdFile.parse(text)
        for problem in problems { report("passwd file \(path) \(problem)") }
        var users: [String: PasswordHash] = [:]
        for entry in entries { users[entry.user] = entry.password }
        state.withLockedValue { $0 = State(stamp: stamp, users: users) }
    }

    /// The whole file as text; nil (errno set) when it cannot be read or is over 64 MiB.
    public static func readFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                return nil
            }
            if count == 0 { break }
            bytes += chunk[0..<count]
            // A passwd file of millions of users is not one this reader is for.
            guard bytes.count <= 64 << 20 else { return nil }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
