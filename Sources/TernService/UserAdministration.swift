import Foundation
import MailPolicy

/// `tern user add|passwd|delete`: edits `[auth] passwd_file` in place. The file is rewritten
/// whole to a temporary file beside it, fsynced and renamed over the old one, so that the
/// server (which reads it again when it changes) never sees half a file; a new file gets mode
/// 0600, an existing one keeps its mode.
public enum UserAdministration {
    public enum Change: Sendable {
        /// A new user; fails if the user exists.
        case add
        /// A new password for an existing user.
        case changePassword
    }

    public enum Failure: Error, CustomStringConvertible {
        case noPasswdFile
        case invalidUser(String)
        case userExists(String)
        case noSuchUser(String)
        case emptyPassword
        case hashFailed
        case io(String)

        public var description: String {
            switch self {
            case .noPasswdFile: "the configuration has no [auth] passwd_file"
            case .invalidUser(let user): "\"\(user)\" cannot be a user name (no ':', spaces or control characters)"
            case .userExists(let user): "user \(user) exists already (use `tern user passwd`)"
            case .noSuchUser(let user): "no user \(user)"
            case .emptyPassword: "the password is empty"
            case .hashFailed: "the password could not be hashed"
            case .io(let message): message
            }
        }
    }

    /// Sets `user`'s password to a new hash of `password` in the configured passwd file.
    public static func setPassword(
        user: String, password: String, scheme: PasswordHash.Scheme, change: Change,
        configuration: TernConfiguration
    ) throws(Failure) {
        guard let path = configuration.auth.passwdFile else { throw .noPasswdFile }
        guard PasswdFile.isValidUserName(user) else { throw .invalidUser(user) }
        guard !password.isEmpty else { throw .emptyPassword }
        let text = try read(path)
        let exists = PasswdFile.parse(text).entries.contains { $0.user == user.lowercased() }
        switch change {
        case .add where exists: throw .userExists(user.lowercased())
        case .changePassword where !exists: throw .noSuchUser(user.lowercased())
        default: break
        }
        guard let hash = PasswordHash.make(password: password, scheme: scheme) else { throw .hashFailed }
        try write(PasswdFile.setting(user, to: hash, in: text), to: path)
    }

    /// Removes `user`'s line.
    public static func delete(user: String, configuration: TernConfiguration) throws(Failure) {
        guard let path = configuration.auth.passwdFile else { throw .noPasswdFile }
        let text = try read(path)
        let key = user.lowercased()
        var removed = false
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).filter { line in
            guard !line.hasPrefix("#"), line.split(separator: ":", maxSplits: 1).first?.lowercased() == key else {
                return true
            }
            removed = true
            return false
        }
        guard removed else { throw .noSuchUser(key) }
        try write(lines.joined(separator: "\n"), to: path)
    }

    static func read(_ path: String) throws(Failure) -> String {
        guard FileManager.default.fileExists(atPath: path) else { return "" }
        guard let text = UserDatabase.readFile(path) else {
            throw .io("cannot read \(path): \(String(cString: strerror(errno)))")
        }
        return text
    }

    static func write(_ text: String, to path: String) throws(Failure) {
        let directory = (path as NSString).deletingLastPathComponent
        let temporary = "\(path).tmp.\(getpid())"
        var mode: mode_t = 0o600
        var info = stat()
        if stat(path, &info) == 0 { mode = info.st_mode & 0o7777 }
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw .io("cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var ok = true
        let bytes = Array(text.utf8)
        var offset = 0
        while ok, offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if written < 0, errno == EINTR { continue }
            if written <= 0 { ok = false } else { offset += written }
        }
        ok = ok && fchmod(fd, mode) == 0 && fsync(fd) == 0
        let error = errno
        close(fd)
        guard ok, rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(ok ? errno : error))
            unlink(temporary)
            throw .io("cannot write \(path): \(reason)")
        }
        let directoryFD = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 {
            fsync(directoryFD)
            close(directoryFD)
        }
    }
}
