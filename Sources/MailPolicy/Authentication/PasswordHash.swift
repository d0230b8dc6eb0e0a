import CCrypt

#if canImport(Glibc)
    import Glibc
#endif

/// A password as Dovecot's passwd-file keeps it: `{SCHEME}value`
/// (https://doc.dovecot.org/main/core/config/auth/schemes.html). The crypt(3) schemes are
/// checked by libxcrypt, the same code Dovecot and the system's own logins use.
public struct PasswordHash: Sendable, Hashable, CustomStringConvertible {
    public enum Scheme: String, Sendable, Hashable, CaseIterable {
        /// `$6$…`: SHA-512 crypt, the default for new entries.
        case sha512Crypt = "SHA512-CRYPT"
        /// `$5$…`: SHA-256 crypt.
        case sha256Crypt = "SHA256-CRYPT"
        /// `$2y$…`: bcrypt.
        case blfCrypt = "BLF-CRYPT"
        /// Any format crypt(3) knows, told apart by its prefix.
        case crypt = "CRYPT"
        /// The password itself. Dovecot also calls it CLEARTEXT.
        case plain = "PLAIN"

        /// The crypt(3) prefix new hashes of this scheme get, nil for PLAIN.
        var cryptPrefix: String? {
            switch self {
            case .sha512Crypt: "$6$"
            case .sha256Crypt: "$5$"
            case .blfCrypt: "$2y$"
            case .crypt: "$6$"
            case .plain: nil
            }
        }

        /// Whether a stored value has the form this scheme promises.
        func accepts(_ value: String) -> Bool {
            switch self {
            case .sha512Crypt: value.hasPrefix("$6$")
            case .sha256Crypt: value.hasPrefix("$5$")
            case .blfCrypt: value.hasPrefix("$2y$") || value.hasPrefix("$2b$") || value.hasPrefix("$2a$")
            case .crypt: !value.isEmpty && !value.hasPrefix("*") && !value.hasPrefix("!")
            case .plain: true
            }
        }
    }

    public enum ParseError: Error, Sendable, Hashable, CustomStringConvertible {
        case unknownScheme(String)
        case malformed(Scheme)

        public var description: String {
            switch self {
            case .unknownScheme(let name): "unsupported password scheme {\(name)}"
            case .malformed(let scheme): "not a \(scheme.rawValue) hash"
            }
        }
    }

    public let scheme: Scheme
    let value: String

    /// Parses the password field of a passwd-file line. Without a `{SCHEME}` prefix the value
    /// is taken as CRYPT, Dovecot's default for passwd-file.
    public init(field: String) throws(ParseError) {
        var scheme = Scheme.crypt
        var value = Substring(field)
        if field.hasPrefix("{"), let close = field.firstIndex(of: "}") {
            let name = field[field.index(after: field.startIndex)..<close].uppercased()
            switch name {
            case "CLEARTEXT": scheme = .plain
            case "BLF-CRYPT", "BCRYPT": scheme = .blfCrypt
            default:
                guard let known = Scheme(rawValue: name) else { throw .unknownScheme(name) }
                scheme = known
            }
            value = field[field.index(after: close)...]
        }
        guard scheme.accepts(String(value)) else { throw .malformed(scheme) }
        self.scheme = scheme
        self.value = String(value)
    }

    /// A new hash of `password` with a fresh random salt from the system.
    public static func make(password: String, scheme: Scheme = .sha512Crypt) -> PasswordHash? {
        guard let prefix = scheme.cryptPrefix else {
            return try? PasswordHash(field: "{PLAIN}\(password)")
        }
        // bcrypt's cost: 2^10 rounds, libxcrypt's own choice for $2y$ is lower.
        let count: UInt = scheme == .blfCrypt ? 10 : 0
        guard let setting = crypt_gensalt_ra(prefix, count, nil, 0) else { return nil }
        defer { free(setting) }
        guard let hashed = Self.crypt(password, setting: String(cString: setting)) else { return nil }
        return try? PasswordHash(field: "{\(scheme.rawValue)}\(hashed)")
    }

    /// Whether `password` is the one this hash was made from. The comparison takes the same
    /// time wherever the first difference is.
    public func matches(_ password: String) -> Bool {
        switch scheme {
        case .plain:
            return Self.constantTimeEquals(Array(password.utf8), Array(value.utf8))
        default:
            guard !password.utf8.contains(0), let computed = Self.crypt(password, setting: value) else { return false }
            return Self.constantTimeEquals(Array(computed.utf8), Array(value.utf8))
        }
    }

    /// The field as a passwd-file line holds it.
    public var encoded: String { "{\(scheme.rawValue)}\(value)" }

    /// Never the hash itself: a log line that prints a user's entry shows only its scheme.
    public var description: String { "{\(scheme.rawValue)}…" }

    /// crypt(3) through `crypt_ra`, which is thread-safe and allocates its own work area. nil
    /// when the setting is not one libxcrypt accepts (it answers with a `*` string then).
    static func crypt(_ password: String, setting: String) -> String? {
        var data: UnsafeMutableRawPointer? = nil
        var size: Int32 = 0
        defer { free(data) }
        guard let result = crypt_ra(password, setting, &data, &size) else { return nil }
        let hashed = String(cString: result)
        guard !hashed.hasPrefix("*") else { return nil }
        return hashed
    }

    static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt8(a.count == b.count ? 0 : 1)
        for index in 0..<max(a.count, b.count) {
            let x = index < a.count ? a[index] : 0
            let y = index < b.count ? b[index] : 0
            difference |= x ^ y
        }
        return difference == 0
    }
}
