import MailPolicy
import NIOCore
import NIOPosix
import SMTPProtocol

/// What AUTH needs on the submission ports (SPEC §2.4): the users, the failure throttle, and
/// the threads that run crypt(3), which takes milliseconds on purpose and so never runs on an
/// event loop.
public struct SMTPAuthentication: Sendable {
    public var users: UserDatabase
    public var throttle: AuthenticationThrottle
    public var threadPool: NIOThreadPool
    public var mechanisms: [String]

    public init(
        users: UserDatabase, throttle: AuthenticationThrottle, threadPool: NIOThreadPool,
        mechanisms: [String] = ["PLAIN", "LOGIN"]
    ) {
        self.users = users
        self.throttle = throttle
        self.threadPool = threadPool
        self.mechanisms = mechanisms
    }

    /// Checks a login from `address` at `now`, counting a failure against the address and the
    /// user. Blocked clients and users are refused before any password is looked at.
    func authenticate(
        _ credentials: SASLCredentials, address: String?, now: Int, on eventLoop: any EventLoop
    ) -> EventLoopFuture<AuthenticationResult> {
        switch throttle.check(address: address, user: credentials.user, now: now) {
        case .addressBlocked, .userBlocked:
            return eventLoop.makeSucceededFuture(.blocked)
        case .allowed:
            break
        }
        let users = self.users
        let throttle = self.throttle
        return threadPool.runIfActive(eventLoop: eventLoop) { () -> AuthenticationResult in
            if users.verify(user: credentials.user, password: credentials.password) {
                return .success(user: credentials.user.lowercased())
            }
            throttle.recordFailure(address: address, user: credentials.user, now: now)
            // The failure that reaches a limit is answered like the ones before it; the next
            // attempt is the one shut out.
            return .invalid
        }.flatMapErrorThrowing { _ in .temporaryFailure }
    }
}
