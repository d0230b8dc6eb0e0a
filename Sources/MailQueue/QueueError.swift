import Glibc

/// Why a queue operation failed. Storage errors mean "tell the client 452 4.3.1 / 451 4.3.0
/// and try again later": nothing acknowledged before is lost.
public enum QueueError: Error, Sendable, CustomStringConvertible, Equatable {
    /// A system call on the queue's storage failed (ENOSPC, EIO, …): errno and what was done.
    case storage(errno: Int32, String)
    /// Another process holds the queue directory's lock.
    case locked(String)
    /// The log holds something recovery cannot use (the text says where).
    case corrupt(String)
    case unknownMessage(QueueID)
    case unknownRecipient(QueueID, index: Int)
    /// The spool was already committed or discarded.
    case spoolFinished(QueueID)
    /// The store was closed.
    case closed

    public var description: String {
        switch self {
        case .storage(let code, let operation):
            return "queue storage error: \(operation): \(String(cString: strerror(code))) (errno \(code))"
        case .locked(let text): return text
        case .corrupt(let text): return "queue log corrupt: \(text)"
        case .unknownMessage(let id): return "no message \(id) in the queue"
        case .unknownRecipient(let id, let index): return "message \(id) has no recipient \(index)"
        case .spoolFinished(let id): return "spool of \(id) already committed or discarded"
        case .closed: return "queue is closed"
        }
    }

    /// The storage error of the failed system call `operation`, from the current errno.
    static func storage(_ operation: String) -> QueueError {
        .storage(errno: errno, operation)
    }

    /// The disk is full (or the quota exhausted).
    public var isNoSpace: Bool {
        if case .storage(let code, _) = self { return code == ENOSPC || code == EDQUOT }
        return false
    }
}
