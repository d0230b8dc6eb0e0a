/// Why a filter gave no verdict. Every case means the filter, not the message, failed: the
/// caller applies its per-filter choice (accept and log, or defer with `451 4.7.1`). The
/// description completes a log line: "spamd 127.0.0.1:783: connect: connection refused".
public enum FilterError: Error, Sendable, Hashable, CustomStringConvertible {
    /// No connection: refused, unreachable, no such socket, or the connect time limit passed.
    case connectFailed(String)
    /// The whole exchange took longer than the filter's total time limit.
    case timedOut(String)
    /// The filter closed the connection before its answer was complete.
    case connectionClosed(String)
    /// The filter's answer does not follow its protocol.
    case malformedReply(String)
    /// The filter's answer is larger than the client accepts.
    case replyTooLarge(String)
    /// The filter answered, and its answer is an error of its own (spamd's `EX_*` codes,
    /// rspamd's HTTP errors).
    case filterFailed(String)
    /// The milter and this client cannot agree on a protocol version or on the actions the
    /// milter needs.
    case negotiationFailed(String)
    /// The filter's configuration cannot be used, e.g. a user name with a line break.
    case configuration(String)
    /// Reading or writing failed.
    case io(String)
    /// The task that asked was cancelled.
    case cancelled

    public var description: String {
        switch self {
        case .connectFailed(let detail): detail
        case .timedOut(let detail): detail
        case .connectionClosed(let detail): detail
        case .malformedReply(let detail): detail
        case .replyTooLarge(let detail): detail
        case .filterFailed(let detail): detail
        case .negotiationFailed(let detail): detail
        case .configuration(let detail): detail
        case .io(let detail): detail
        case .cancelled: "cancelled"
        }
    }
}
