/// A user name and password a client sent in AUTH (RFC 4954). The password never appears in a
/// description, so no log line or test failure can print it.
public struct SASLCredentials: Sendable, Hashable, CustomStringConvertible {
    public var mechanism: String
    /// The authentication identity (RFC 4616's authcid).
    public var user: String
    public var password: String

    public init(mechanism: String, user: String, password: String) {
        self.mechanism = mechanism
        self.user = user
        self.password = password
    }

    public var description: String { "\(mechanism) credentials for \(user)" }
}

/// How a login attempt ended, as the driver reports it back to the session.
public enum AuthenticationResult: Sendable, Hashable {
    /// The credentials are good; the user is now authenticated as `user`.
    case success(user: String)
    /// Wrong user or password: `535 5.7.8`.
    case invalid
    /// The password could not be checked now: `454 4.7.0`.
    case temporaryFailure
    /// Too many failures from this client or for this user: `421 4.7.0`, and the session ends.
    case blocked
}

/// The steps of the SASL mechanisms the server speaks (RFC 4616 PLAIN, and LOGIN as every
/// submission server since Exchange has spoken it). Pure: it turns client responses into
/// credentials or a refusal.
enum SASLExchange: Sendable, Hashable {
    /// PLAIN without an initial response: waiting for `authzid NUL authcid NUL passwd`.
    case plain
    /// LOGIN: waiting for the user name, then the password.
    case loginUser
    case loginPassword(user: String)

    enum Step: Sendable, Hashable {
        /// Send a 334 challenge (base64 text) and wait for the next response.
        case challenge(String, next: SASLExchange)
        case done(SASLCredentials)
        case malformed
    }

    /// `334 VXNlcm5hbWU6` and `334 UGFzc3dvcmQ6`: "Username:" and "Password:" in base64.
    static let usernamePrompt = "VXNlcm5hbWU6"
    static let passwordPrompt = "UGFzc3dvcmQ6"

    /// The start of a mechanism; nil for one the server does not offer.
    static func begin(mechanism: String, initialResponse: String?) -> Step? {
        switch mechanism {
        case "PLAIN":
            guard let initialResponse else { return .challenge("", next: .plain) }
            return SASLExchange.plain.respond(initialResponse)
        case "LOGIN":
            // An initial response to LOGIN is the user name (draft-murchison-sasl-login §2).
            guard let initialResponse else { return .challenge(usernamePrompt, next: .loginUser) }
            return SASLExchange.loginUser.respond(initialResponse)
        default:
            return nil
        }
    }

    /// The client's base64 response (`=` is the empty response of RFC 4954 §4).
    func respond(_ response: String) -> Step {
        guard let bytes = response == "=" ? [] : Base64.decode(response) else { return .malformed }
        switch self {
        case .plain:
            // RFC 4616 §2: [authzid] NUL authcid NUL passwd, UTF-8, no NUL inside a field.
            let fields = bytes.split(separator: 0, omittingEmptySubsequences: false)
            guard fields.count == 3, let authzid = Self.text(fields[0]), let user = Self.text(fields[1]),
                let password = Self.text(fields[2]), !user.isEmpty
            else { return .malformed }
            // Acting as another identity needs proxy rights Tern does not grant.
            guard authzid.isEmpty || authzid == user else { return .malformed }
            return .done(SASLCredentials(mechanism: "PLAIN", user: user, password: password))
        case .loginUser:
            guard let user = Self.text(bytes[...]), !user.isEmpty, !user.contains("\0") else { return .malformed }
            return .challenge(Self.passwordPrompt, next: .loginPassword(user: user))
        case .loginPassword(let user):
            guard let password = Self.text(bytes[...]), !password.contains("\0") else { return .malformed }
            return .done(SASLCredentials(mechanism: "LOGIN", user: user, password: password))
        }
    }

    private static func text(_ bytes: ArraySlice<UInt8>) -> String? {
        String(validating: bytes, as: UTF8.self)
    }
}
