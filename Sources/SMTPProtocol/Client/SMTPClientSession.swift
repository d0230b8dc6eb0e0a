import NIOCore

/// The client side of one SMTP (or LMTP) session as a value type (RFC 5321 §3, §4.1; RFC 2920;
/// RFC 2033). Every event returns the action the connection driver carries out; no I/O and no
/// clock live here, so every dialogue is testable without a socket.
///
/// A session greets, says EHLO (HELO when EHLO is refused), may upgrade to TLS, and then runs
/// any number of transactions, one at a time: `begin` → commands, `messageSent` once the
/// content is on the wire, and a `.finished` result that decides each recipient on its own. A
/// reply to one recipient never decides another: only a failure of the whole session (a
/// dropped connection, a timeout, a `421`) leaves recipients undecided, for the next host.
public struct SMTPClientSession: Sendable {
    public struct Configuration: Sendable, Hashable {
        /// The name for EHLO/HELO/LHLO: the MTA's own hostname.
        public var heloName: String
        /// RFC 2033: LHLO instead of EHLO, no HELO fallback, one reply per recipient after DATA.
        public var lmtp: Bool
        /// Upgrade with STARTTLS when the server offers it (RFC 3207). Opportunistic: when the
        /// server answers STARTTLS with anything but 220, the session goes on in plaintext.
        public var startTLS: Bool
        /// RFC 2920 §3.1 allows a client to pipeline MAIL, RCPT and DATA; off only for tests and
        /// broken servers.
        public var usePipelining: Bool

        public init(heloName: String, lmtp: Bool = false, startTLS: Bool = false, usePipelining: Bool = true) {
            self.heloName = heloName
            self.lmtp = lmtp
            self.startTLS = startTLS
            self.usePipelining = usePipelining
        }
    }

    /// One recipient of a transaction with its DSN parameters (RFC 3461 §4).
    public struct Recipient: Sendable, Hashable {
        public var address: String
        public var notify: DSNNotify?
        public var originalRecipient: OriginalRecipient?

        public init(address: String, notify: DSNNotify? = nil, originalRecipient: OriginalRecipient? = nil) {
            self.address = address
            self.notify = notify
            self.originalRecipient = originalRecipient
        }
    }

    /// What one transaction sends: the envelope and the facts about the content that the
    /// server's extensions decide on.
    public struct Envelope: Sendable, Hashable {
        /// The reverse path; "" for `<>`.
        public var sender: String
        public var recipients: [Recipient]
        /// Octets of content, for `SIZE=` (RFC 1870) and the server's limit.
        public var size: Int
        /// `BODY=8BITMIME` is needed: the content has octets above 127 (RFC 6152).
        public var eightBit: Bool
        /// The message needs SMTPUTF8 (RFC 6531 §3.4): a UTF-8 address in the envelope.
        public var smtpUTF8: Bool
        public var ret: DSNReturn?
        public var envelopeID: String?
        /// `REQUIRETLS` (RFC 8689 §3): sent only under TLS to a server that offers it.
        public var requireTLS: Bool

        public init(
            sender: String, recipients: [Recipient], size: Int, eightBit: Bool = false, smtpUTF8: Bool = false,
            ret: DSNReturn? = nil, envelopeID: String? = nil, requireTLS: Bool = false
        ) {
            self.sender = sender
            self.recipients = recipients
            self.size = size
            self.eightBit = eightBit
            self.smtpUTF8 = smtpUTF8
            self.ret = ret
            self.envelopeID = envelopeID
            self.requireTLS = requireTLS
        }
    }

    /// Why a session cannot go on. The driver closes the connection and, for recipients not yet
    /// decided, tries the next host.
    public enum Failure: Error, Sendable, Hashable, CustomStringConvertible {
        /// The server answered in a way that ends the session: a greeting other than 220, a
        /// refused HELO, a `421` at any point.
        case refused(stage: Stage, SMTPReply)
        /// A reply that the session did not expect, such as a 354 outside DATA.
        case unexpectedReply(stage: Stage, SMTPReply)
        /// The connection is gone, timed out or sent something that is not a reply; the driver
        /// says which.
        case connection(stage: Stage, String)

        public var description: String {
            switch self {
            case .refused(let stage, let reply): "\(stage.rawValue) refused: \(reply.fullText)"
            case .unexpectedReply(let stage, let reply): "unexpected reply \(stage.rawValue): \(reply.fullText)"
            case .connection(let stage, let reason): "\(reason) \(stage.rawValue)"
            }
        }

        /// The reply behind the failure, if the server gave one.
        public var reply: SMTPReply? {
            switch self {
            case .refused(_, let reply), .unexpectedReply(_, let reply): reply
            case .connection: nil
            }
        }
    }

    /// Where in the dialogue the session waits, which also picks the reply timeout
    /// (RFC 5321 §4.5.3.2).
    public enum Stage: String, Sendable, Hashable {
        case greeting = "in the greeting"
        case hello = "after EHLO/HELO"
        case startTLS = "after STARTTLS"
        case tlsHandshake = "in the TLS handshake"
        case mail = "after MAIL FROM"
        case recipient = "after RCPT TO"
        case dataCommand = "after DATA"
        case dataContent = "while sending message content"
        case dataEnd = "after end of data"
        case reset = "after RSET"
        case quit = "after QUIT"
        case idle = "while idle"
    }

    /// What the caller learns from one transaction: the reply that decided each recipient,
    /// index by index, or nil where the session failed before deciding it.
    public struct TransactionResult: Sendable, Hashable {
        public var replies: [SMTPReply?]
        /// Set when the session ended before every recipient was decided; the connection is
        /// unusable.
        public var failure: Failure?

        public init(replies: [SMTPReply?], failure: Failure? = nil) {
            self.replies = replies
            self.failure = failure
        }
    }

    public enum Action: Sendable, Hashable {
        /// Wait for the next reply.
        case none
        /// Write these commands (one or a pipelined group), then wait for replies.
        case send(ByteBuffer)
        /// Start the TLS handshake, then call `tlsEstablished` (or `connectionFailed`).
        case startTLS
        /// The session is idle: `begin` a transaction or `quit`.
        case ready
        /// Write the message content, dot-stuffed and ended (`SMTPDataEncoder`), then call
        /// `messageSent`.
        case sendMessage
        /// The transaction is over. Unless the result carries a failure, the session is `ready`
        /// for the next one.
        case finished(TransactionResult)
        /// The session cannot go on: close the connection.
        case fail(Failure)
        /// QUIT was answered (or need not be): close the connection.
        case close
    }

    private enum Expected: Sendable, Hashable {
        case reset, mail, recipient(Int), data
    }

    private struct Transaction: Sendable {
        var envelope: Envelope
        var replies: [SMTPReply?]
        /// Commands not yet written (without pipelining, one goes out per reply).
        var unsent: [(command: String, expected: Expected)] = []
        /// Commands written whose replies are still to come, in order.
        var awaiting: [Expected] = []
        var mailAccepted = false
        /// Indices of the recipients the server accepted, in RCPT order (LMTP answers DATA
        /// once for each of them, in this order).
        var accepted: [Int] = []
        /// The reply that failed MAIL or the whole transaction, for recipients it leaves open.
        var commonFailure: SMTPReply?
        /// LMTP: data replies still to come.
        var dataRepliesLeft = 0
        /// The server accepted DATA although no recipient was accepted (RFC 2920 §3.1): the
        /// client sends an empty message's end and ignores the reply.
        var discardingData = false
    }

    private enum State: Sendable {
        case greeting
        case hello(extended: Bool)
        case startTLS
        case handshaking
        case ready
        case transaction(Transaction)
        case dataContent(Transaction)
        case dataEnd(Transaction)
        case quitting
        case closed
    }

    public let configuration: Configuration
    public private(set) var capabilities = SMTPServerCapabilities()
    public private(set) var tlsActive = false
    /// The reply to EHLO/HELO/LHLO, and so the server's name as it gives it.
    public private(set) var greeting: SMTPReply?
    private var state = State.greeting
    /// A transaction ended without its end-of-data reply: the next one starts with RSET.
    private var needsReset = false

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// What the session is waiting for, or nil when it waits for nothing from the server.
    public var stage: Stage? {
        switch state {
        case .greeting: .greeting
        case .hello: .hello
        case .startTLS: .startTLS
        case .handshaking: .tlsHandshake
        case .ready, .closed: nil
        case .transaction(let transaction):
            switch transaction.awaiting.first {
            case .reset: .reset
            case .mail: .mail
            case .recipient: .recipient
            case .data, nil: .dataCommand
            }
        case .dataContent: .dataContent
        case .dataEnd: .dataEnd
        case .quitting: .quit
        }
    }

    public var isReady: Bool {
        if case .ready = state { true } else { false }
    }

    // MARK: Events

    /// A complete reply from the server.
    public mutating func receive(_ reply: SMTPReply) -> Action {
        switch state {
        case .greeting:
            guard reply.code == 220 else { return quitAfterFailure(.refused(stage: .greeting, reply)) }
            return sendHello(extended: true)
        case .hello(let extended):
            return helloReply(reply, extended: extended)
        case .startTLS:
            guard reply.code == 220 else {
                // Opportunistic TLS (RFC 3207 §4): a refusal leaves a usable plaintext session.
                if reply.code == 421 { return quitAfterFailure(.refused(stage: .startTLS, reply)) }
                state = .ready
                return .ready
            }
            state = .handshaking
            return .startTLS
        case .transaction(var transaction):
            return transactionReply(reply, &transaction)
        case .dataEnd(var transaction):
            return dataEndReply(reply, &transaction)
        case .quitting:
            state = .closed
            return .close
        case .ready, .handshaking, .dataContent, .closed:
            // A reply nobody asked for: the server is out of step.
            return fail(.unexpectedReply(stage: stage ?? .idle, reply))
        }
    }

    /// The TLS handshake succeeded: EHLO again, as RFC 3207 §4.2 requires, and forget what the
    /// plaintext EHLO said.
    public mutating func tlsEstablished() -> Action {
        guard case .handshaking = state else { return .none }
        tlsActive = true
        capabilities = SMTPServerCapabilities()
        return sendHello(extended: true)
    }

    /// The connection failed (closed, timed out, unreadable reply, failed handshake); `reason`
    /// says how, e.g. "connection timed out".
    public mutating func connectionFailed(_ reason: String) -> Action {
        let failure = Failure.connection(stage: stage ?? .idle, reason)
        switch state {
        case .transaction(let transaction), .dataContent(let transaction), .dataEnd(let transaction):
            state = .closed
            return .finished(Self.result(of: transaction, failure: failure))
        case .quitting, .closed:
            state = .closed
            return .close
        default:
            state = .closed
            return .fail(failure)
        }
    }

    /// Starts a transaction on a ready session. A transaction the server cannot take (too big,
    /// 8-bit or UTF-8 content it does not support) finishes at once without a command sent.
    public mutating func begin(_ envelope: Envelope) -> Action {
        precondition(isReady, "a transaction starts only on a ready session")
        precondition(!envelope.recipients.isEmpty, "a transaction has at least one recipient")
        if let refusal = refusal(of: envelope) {
            return .finished(TransactionResult(replies: Array(repeating: refusal, count: envelope.recipients.count)))
        }
        var transaction = Transaction(
            envelope: envelope, replies: Array(repeating: nil, count: envelope.recipients.count))
        if needsReset { transaction.unsent.append(("RSET", .reset)) }
        transaction.unsent.append((mailCommand(envelope), .mail))
        for (index, recipient) in envelope.recipients.enumerated() {
            transaction.unsent.append((recipientCommand(recipient), .recipient(index)))
        }
        transaction.unsent.append(("DATA", .data))
        needsReset = false
        return sendNext(&transaction)
    }

    /// The content and its end-of-data line are written.
    public mutating func messageSent() -> Action {
        guard case .dataContent(var transaction) = state else { return .none }
        transaction.dataRepliesLeft = configuration.lmtp ? transaction.accepted.count : 1
        state = .dataEnd(transaction)
        return .none
    }

    /// Ends a ready session politely: QUIT, then `.close` when it is answered.
    public mutating func quit() -> Action {
        switch state {
        case .closed: return .close
        case .ready:
            state = .quitting
            return .send(Self.line("QUIT"))
        default:
            state = .closed
            return .close
        }
    }

    // MARK: Greeting and hello

    private mutating func sendHello(extended: Bool) -> Action {
        state = .hello(extended: extended)
        let verb = configuration.lmtp ? "LHLO" : extended ? "EHLO" : "HELO"
        return .send(Self.line("\(verb) \(configuration.heloName)"))
    }

    private mutating func helloReply(_ reply: SMTPReply, extended: Bool) -> Action {
        guard reply.code == 250 else {
            // RFC 5321 §3.2: a server that does not know EHLO gets HELO. A 421 ends the
            // session; LMTP has no fallback (RFC 2033 §4.1).
            if extended, !configuration.lmtp, reply.code != 421 { return sendHello(extended: false) }
            return quitAfterFailure(.refused(stage: .hello, reply))
        }
        greeting = reply
        capabilities = extended ? SMTPServerCapabilities(ehloReply: reply) : SMTPServerCapabilities()
        if configuration.startTLS, !tlsActive, capabilities.startTLS {
            state = .startTLS
            return .send(Self.line("STARTTLS"))
        }
        state = .ready
        return .ready
    }

    // MARK: Transactions

    /// A reply the client can give itself: the server's own limits and extensions say it would
    /// refuse the message (RFC 1870 §6, RFC 6152 §3, RFC 6531 §3.4).
    private func refusal(of envelope: Envelope) -> SMTPReply? {
        if let maximum = capabilities.maximumSize, envelope.size > maximum {
            return SMTPReply(
                552, EnhancedStatusCode(5, 3, 4),
                "message size \(envelope.size) exceeds the server's limit of \(maximum) octets")
        }
        if envelope.eightBit, !capabilities.eightBitMIME, !configuration.lmtp {
            return SMTPReply(
                554, EnhancedStatusCode(5, 6, 3), "the message has 8-bit content and the server lacks 8BITMIME")
        }
        if envelope.smtpUTF8, !capabilities.smtpUTF8 {
            return SMTPReply(
                553, EnhancedStatusCode(5, 6, 7), "the envelope has UTF-8 addresses and the server lacks SMTPUTF8")
        }
        // RFC 8689 §4.2.1: a REQUIRETLS message never goes out in plaintext, nor to a server
        // that would not keep the requirement.
        if envelope.requireTLS, !(tlsActive && capabilities.offers("REQUIRETLS")) {
            return SMTPReply(
                550, EnhancedStatusCode(5, 7, 30),
                tlsActive ? "REQUIRETLS support required: the server lacks REQUIRETLS" : "REQUIRETLS needs TLS")
        }
        return nil
    }

    private func mailCommand(_ envelope: Envelope) -> String {
        var command = "MAIL FROM:<\(envelope.sender)>"
        if capabilities.offers("SIZE") { command += " SIZE=\(envelope.size)" }
        if envelope.eightBit, capabilities.eightBitMIME { command += " BODY=8BITMIME" }
        if envelope.smtpUTF8, capabilities.smtpUTF8 { command += " SMTPUTF8" }
        if envelope.requireTLS { command += " REQUIRETLS" }
        if capabilities.dsn {
            if let ret = envelope.ret { command += " RET=\(ret.rawValue)" }
            if let envelopeID = envelope.envelopeID { command += " ENVID=\(XText.encode(envelopeID))" }
        }
        return command
    }

    private func recipientCommand(_ recipient: Recipient) -> String {
        var command = "RCPT TO:<\(recipient.address)>"
        if capabilities.dsn {
            if let notify = recipient.notify {
                var values: [String] = []
                if notify.contains(.success) { values.append("SUCCESS") }
                if notify.contains(.failure) { values.append("FAILURE") }
                if notify.contains(.delay) { values.append("DELAY") }
                command += " NOTIFY=" + (values.isEmpty ? "NEVER" : values.joined(separator: ","))
            }
            if let original = recipient.originalRecipient {
                command += " ORCPT=\(original.addressType);\(XText.encode(original.address))"
            }
        }
        return command
    }

    /// Writes what may go out now: the whole group with PIPELINING (RFC 2920 §3.1 lets DATA
    /// end a group), else the next command.
    private mutating func sendNext(_ transaction: inout Transaction) -> Action {
        guard !transaction.unsent.isEmpty else {
            state = .transaction(transaction)
            return .none
        }
        let pipelining = configuration.usePipelining && (capabilities.pipelining || configuration.lmtp)
        let count = pipelining ? transaction.unsent.count : 1
        var buffer = ByteBuffer()
        for (command, expected) in transaction.unsent.prefix(count) {
            buffer.writeString(command)
            buffer.writeStaticString("\r\n")
            transaction.awaiting.append(expected)
        }
        transaction.unsent.removeFirst(count)
        state = .transaction(transaction)
        return .send(buffer)
    }

    private mutating func transactionReply(_ reply: SMTPReply, _ transaction: inout Transaction) -> Action {
        guard let expected = transaction.awaiting.first else {
            return fail(.unexpectedReply(stage: .dataCommand, reply))
        }
        transaction.awaiting.removeFirst()
        if reply.code == 421 {
            // The server is closing the session: what it has not decided goes to another host.
            state = .closed
            return .finished(Self.result(of: transaction, failure: .refused(stage: stage(of: expected), reply)))
        }
        switch expected {
        case .reset:
            guard reply.code == 250 else {
                state = .closed
                return .finished(Self.result(of: transaction, failure: .refused(stage: .reset, reply)))
            }
        case .mail:
            if reply.code == 250 {
                transaction.mailAccepted = true
            } else {
                // Every recipient shares the sender's fate. Unsent commands are dropped; those
                // already pipelined are answered and ignored.
                transaction.commonFailure = reply
                transaction.unsent.removeAll()
            }
        case .recipient(let index):
            // An accepted recipient is decided by the end of data, a refused one here.
            if transaction.commonFailure == nil {
                if reply.code == 250 || reply.code == 251 {
                    transaction.accepted.append(index)
                } else {
                    transaction.replies[index] = reply
                }
            }
        case .data:
            if reply.code == 354 {
                guard transaction.accepted.isEmpty else {
                    state = .dataContent(transaction)
                    return .sendMessage
                }
                // RFC 2920 §3.1: DATA accepted with no recipient. End the empty content and
                // ignore the answer.
                transaction.discardingData = true
                transaction.dataRepliesLeft = 1
                state = .dataEnd(transaction)
                return .send(Self.line("."))
            }
            if transaction.commonFailure == nil, !transaction.accepted.isEmpty {
                transaction.commonFailure = reply
            }
            needsReset = transaction.mailAccepted
            return finish(transaction)
        }
        guard transaction.awaiting.isEmpty else {
            state = .transaction(transaction)
            return .none
        }
        let onlyDataLeft = transaction.unsent.count == 1 && transaction.unsent[0].expected == .data
        if transaction.unsent.isEmpty || (onlyDataLeft && transaction.accepted.isEmpty) {
            // Without pipelining, a refused MAIL or refusals of every recipient end the
            // transaction before DATA. The server holds a transaction when MAIL was accepted,
            // so the next one starts with RSET.
            needsReset = transaction.mailAccepted
            return finish(transaction)
        }
        return sendNext(&transaction)
    }

    private mutating func dataEndReply(_ reply: SMTPReply, _ transaction: inout Transaction) -> Action {
        if transaction.discardingData {
            needsReset = true
            return finish(transaction)
        }
        if configuration.lmtp {
            // RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.
            let position = transaction.accepted.count - transaction.dataRepliesLeft
            transaction.replies[transaction.accepted[position]] = reply
            transaction.dataRepliesLeft -= 1
            if reply.code == 421 {
                state = .closed
                return .finished(Self.result(of: transaction, failure: .refused(stage: .dataEnd, reply)))
            }
            guard transaction.dataRepliesLeft == 0 else {
                state = .dataEnd(transaction)
                return .none
            }
            return finish(transaction)
        }
        if reply.code == 421 {
            state = .closed
            return .finished(Self.result(of: transaction, failure: .refused(stage: .dataEnd, reply)))
        }
        for index in transaction.accepted { transaction.replies[index] = reply }
        return finish(transaction)
    }

    private mutating func finish(_ transaction: Transaction) -> Action {
        state = .ready
        return .finished(Self.result(of: transaction, failure: nil))
    }

    /// Recipients accepted at RCPT take the common failure (a refused DATA), or all of them do
    /// when MAIL was refused; an accepted recipient without a reply after DATA stays open.
    private static func result(of transaction: Transaction, failure: Failure?) -> TransactionResult {
        var replies = transaction.replies
        if let common = transaction.commonFailure {
            if !transaction.mailAccepted {
                replies = replies.map { _ in common }
            } else {
                for index in transaction.accepted { replies[index] = common }
            }
        }
        return TransactionResult(replies: replies, failure: failure)
    }

    private func stage(of expected: Expected) -> Stage {
        switch expected {
        case .reset: .reset
        case .mail: .mail
        case .recipient: .recipient
        case .data: .dataCommand
        }
    }

    private mutating func quitAfterFailure(_ failure: Failure) -> Action {
        // RFC 5321 §3.1 asks for QUIT after a refused greeting; the failure is what counts, so
        // the driver may close without waiting for its answer.
        state = .closed
        return .fail(failure)
    }

    private mutating func fail(_ failure: Failure) -> Action {
        state = .closed
        return .fail(failure)
    }

    private static func line(_ text: String) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeString(text)
        buffer.writeStaticString("\r\n")
        return buffer
    }
}

extension SMTPReply {
    /// Every line in one string, as a delivery log or a bounce quotes it:
    /// `550 5.1.1 no such user / second line`.
    public var fullText: String {
        lines.indices.map { $0 == 0 ? lineText(0, last: true) : lines[$0] }.joined(separator: " / ")
    }
}
