import NIOConcurrencyHelpers

/// Counts failed logins per client address and per user name over a sliding window, so that
/// password guessing stops early (SPEC §2.4): past either limit, further attempts are refused
/// without checking any password until old failures age out of the window.
///
/// Memory stays bounded whatever an attacker sends: at most `maxTracked` keys per kind; when
/// full, keys whose failures have all expired go first, then the oldest.
public final class AuthenticationThrottle: Sendable {
    public struct Limits: Sendable, Hashable {
        /// Failures from one client address within `window` before it is shut out.
        public var perAddress: Int
        /// Failures for one user name within `window` before that name is shut out.
        public var perUser: Int
        /// In seconds.
        public var window: Int

        public init(perAddress: Int = 10, perUser: Int = 20, window: Int = 900) {
            self.perAddress = perAddress
            self.perUser = perUser
            self.window = window
        }
    }

    public enum Verdict: Sendable, Hashable {
        case allowed
        case addressBlocked
        case userBlocked
    }

    private struct Failures {
        /// Times of failures still inside the window, oldest first; at most the limit.
        var times: [Int] = []
    }

    private struct State {
        var byAddress: [String: Failures] = [:]
        var byUser: [String: Failures] = [:]
    }

    public let limits: Limits
    private let maxTracked: Int
    private let state = NIOLockedValueBox(State())

    public init(limits: Limits, maxTracked: Int = 100_000) {
        self.limits = limits
        self.maxTracked = maxTracked
    }

    /// Whether `address` may try a login now; `user` nil when the name is not known yet.
    public func check(address: String?, user: String?, now: Int) -> Verdict {
        state.withLockedValue { state in
            if let address, count(state.byAddress[address], now: now) >= limits.perAddress {
                return .addressBlocked
            }
            if let user, count(state.byUser[user.lowercased()], now: now) >= limits.perUser {
                return .userBlocked
            }
            return .allowed
        }
    }

    /// A login failed.
    public func recordFailure(address: String?, user: String?, now: Int) {
        state.withLockedValue { state in
            if let address { record(&state.byAddress, address, limit: limits.perAddress, now: now) }
            if let user, !user.isEmpty { record(&state.byUser, user.lowercased(), limit: limits.perUser, now: now) }
        }
    }

    private func count(_ failures: Failures?, now: Int) -> Int {
        guard let failures else { return 0 }
        return failures.times.count { $0 > now - limits.window }
    }

    private func record(_ table: inout [String: Failures], _ key: String, limit: Int, now: Int) {
        if table[key] == nil, table.count >= maxTracked { evict(&table, now: now) }
        var failures = table[key] ?? Failures()
        failures.times.removeAll { $0 <= now - limits.window }
        failures.times.append(now)
        if failures.times.count > max(limit, 1) { failures.times.removeFirst(failures.times.count - max(limit, 1)) }
        table[key] = failures
    }

    private func evict(_ table: inout [String: Failures], now: Int) {
        let horizon = now - limits.window
        table = table.filter { ($0.value.times.last ?? 0) > horizon }
        guard table.count >= maxTracked else { return }
        // Still full of live entries: drop the oldest tenth.
        let oldest = table.sorted { ($0.value.times.last ?? 0) < ($1.value.times.last ?? 0) }
        for (key, _) in oldest.prefix(max(1, maxTracked / 10)) { table[key] = nil }
    }
}
