import NIOConcurrencyHelpers

/// Per-client limits in the manner of Postfix's anvil: how many connections, messages and
/// recipients one client may start per `window`, and how many connections it may hold open.
/// A nil limit is no limit.
public struct RateLimits: Sendable, Hashable {
    /// The time unit of the rates (Postfix's `anvil_rate_time_unit`, 60 s by default).
    public var window: Duration
    /// New connections per window (`smtpd_client_connection_rate_limit`).
    public var connections: Int?
    /// Connections open at once (`smtpd_client_connection_count_limit`).
    public var concurrentConnections: Int?
    /// MAIL FROM commands per window (`smtpd_client_message_rate_limit`).
    public var messages: Int?
    /// RCPT TO commands per window (`smtpd_client_recipient_rate_limit`).
    public var recipients: Int?
    /// Clients tracked at most; see `RateLimiter` for what happens beyond.
    public var maximumClients: Int

    public init(
        window: Duration = .seconds(60), connections: Int? = nil, concurrentConnections: Int? = nil,
        messages: Int? = nil, recipients: Int? = nil, maximumClients: Int = 100_000
    ) {
        self.window = window
        self.connections = connections
        self.concurrentConnections = concurrentConnections
        self.messages = messages
        self.recipients = recipients
        self.maximumClients = maximumClients
    }
}

/// Which limit a client ran into.
public enum RateLimitKind: String, Sendable, Hashable, CustomStringConvertible {
    case connections
    case concurrentConnections
    case messages
    case recipients

    public var description: String {
        switch self {
        case .connections: "connection rate"
        case .concurrentConnections: "concurrent connections"
        case .messages: "message rate"
        case .recipients: "recipient rate"
        }
    }
}

/// The answer to "may this client do this now?".
public enum RateDecision: Sendable, Hashable {
    case admitted
    /// Over `limit`: `count` is what the client already had (per window, or open at once).
    case refused(RateLimitKind, count: Int, limit: Int)
}

/// Counts what each client does, so a single host (or a single IPv6 /64, which one customer
/// usually holds whole, RFC 6177) cannot take the server's capacity for itself.
///
/// Rates use a sliding window approximated by two fixed buckets, as nginx and Cloudflare do:
/// the count is this bucket's events plus the previous bucket's weighted by how much of it
/// still lies within one window of now. It is exact for steady traffic, never more than one
/// bucket's worth off, and needs O(1) time and two counters per client. Only admitted events
/// count, so a client that keeps trying gets through at exactly the allowed rate.
///
/// Memory is bounded: a client's counters live in the bucket of its last event and the one
/// before, and whole buckets are dropped as time moves on. When more than
/// `limits.maximumClients` clients show up within two windows (a flood from many addresses),
/// the previous bucket is dropped first, then the current one is retired early: limits get
/// laxer for a moment, memory never grows. Open-connection counts live only while the
/// connections do.
public final class RateLimiter: Sendable {
    public let limits: RateLimits
    private let now: @Sendable () -> ContinuousClock.Instant
    private let origin: ContinuousClock.Instant
    private let windowNanoseconds: Int64
    private let state = NIOLockedValueBox(State())

    /// Clients are grouped by this key: an IPv4 address, or an IPv6 /64.
    struct Key: Hashable {
        var high: UInt64
        var low: UInt64

        init(_ client: IPAddress) {
            switch client.unmappedIPv4 ?? client {
            case .v4(let value):
                self.high = 0
                self.low = UInt64(value)
            case .v6(let high, _):
                // The /64 and a marker bit, so that no IPv6 prefix equals an IPv4 key.
                self.high = high
                self.low = 1 << 63
            }
        }
    }

    private struct Counters {
        var connections = 0
        var messages = 0
        var recipients = 0

        subscript(kind: RateLimitKind) -> Int {
            get {
                switch kind {
                case .connections, .concurrentConnections: connections
                case .messages: messages
                case .recipients: recipients
                }
            }
            set {
                switch kind {
                case .connections, .concurrentConnections: connections = newValue
                case .messages: messages = newValue
                case .recipients: recipients = newValue
                }
            }
        }
    }

    private struct State {
        var bucket: Int64 = 0
        var current: [Key: Counters] = [:]
        var previous: [Key: Counters] = [:]
        var open: [Key: Int] = [:]
    }

    public init(limits: RateLimits, now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }) {
        self.limits = limits
        self.now = now
        self.origin = now()
        self.windowNanoseconds = max(1, Self.nanoseconds(limits.window))
    }

    /// A client connects. When admitted, the connection counts as open until
    /// `connectionClosed(_:)` is called for it; a refused connection needs no such call.
    public func admitConnection(_ client: IPAddress) -> RateDecision {
        let key = Key(client)
        return state.withLockedValue { state in
            if let limit = limits.concurrentConnections {
                let open = state.open[key, default: 0]
                if open >= limit { return .refused(.concurrentConnections, count: open, limit: limit) }
            }
            let decision = admit(.connections, key: key, amount: 1, limit: limits.connections, state: &state)
            if decision == .admitted, limits.concurrentConnections != nil { state.open[key, default: 0] += 1 }
            return decision
        }
    }

    /// An admitted connection ended.
    public func connectionClosed(_ client: IPAddress) {
        let key = Key(client)
        state.withLockedValue { state in
            guard let open = state.open[key] else { return }
            state.open[key] = open > 1 ? open - 1 : nil
        }
    }

    /// A client starts a message (MAIL FROM).
    public func admitMessage(_ client: IPAddress) -> RateDecision {
        let key = Key(client)
        return state.withLockedValue { admit(.messages, key: key, amount: 1, limit: limits.messages, state: &$0) }
    }

    /// A client names `count` more recipients (one per RCPT TO).
    public func admitRecipients(_ client: IPAddress, count: Int = 1) -> RateDecision {
        let key = Key(client)
        return state.withLockedValue {
            admit(.recipients, key: key, amount: max(0, count), limit: limits.recipients, state: &$0)
        }
    }

    /// Clients with counters at the moment (for tests and statistics).
    public var trackedClients: Int {
        state.withLockedValue { $0.current.count + $0.previous.count }
    }

    private func admit(
        _ kind: RateLimitKind, key: Key, amount: Int, limit: Int?, state: inout State
    ) -> RateDecision {
        let elapsed = Self.nanoseconds(now() - origin)
        advance(&state, to: elapsed / windowNanoseconds)
        guard let limit else { return .admitted }
        // The part of the previous bucket that still lies within one window of now.
        let intoBucket = elapsed % windowNanoseconds
        let carried = state.previous[key]?[kind] ?? 0
        let weighted = Int((Double(carried) * Double(windowNanoseconds - intoBucket) / Double(windowNanoseconds)))
        let count = (state.current[key]?[kind] ?? 0) + weighted
        if count + amount > limit { return .refused(kind, count: count, limit: limit) }
        if state.current[key] == nil, state.current.count + state.previous.count >= limits.maximumClients {
            if state.previous.isEmpty {
                state.previous = state.current
                state.current = [:]
            } else {
                state.previous = [:]
            }
        }
        state.current[key, default: Counters()][kind] += amount
        return .admitted
    }

    private func advance(_ state: inout State, to bucket: Int64) {
        guard bucket > state.bucket else { return }
        state.previous = bucket == state.bucket + 1 ? state.current : [:]
        state.current = [:]
        state.bucket = bucket
    }

    /// Whole nanoseconds, clamped to 0...Int64.max (about 292 years).
    private static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? 0 : .max }
        let (total, overflowTotal) = whole.addingReportingOverflow(attoseconds / 1_000_000_000)
        if overflowTotal { return .max }
        return max(0, total)
    }
}
