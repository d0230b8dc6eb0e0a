import Logging
import MailMessage
import MailPolicy
import MailQueue
import NIOCore
import SMTPProtocol

/// Drives one SMTP session: reads bytes, frames them, runs `SMTPServerSession`, carries out its
/// actions (policy, spooling, queue commit) and writes the replies. Replies to pipelined
/// commands are collected and written together when the input runs dry (RFC 2920 §3.2).
struct SMTPConnection {
    let context: SMTPServer.Context
    let listener: SMTPListener
    let channel: any Channel
    let client: ClientFacts
    let clientAddress: String?
    let reverseName: Task<String?, Never>
    var logger: Logger

    private enum Stop: Error { case closed }

    func run(inbound: NIOAsyncChannelInboundStream<ByteBuffer>, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) async {
        var driver = Driver(connection: self, inbound: inbound.makeAsyncIterator(), outbound: outbound)
        await driver.run()
    }

    /// The mutable half of a connection, alive for the length of `run`.
    private struct Driver {
        let connection: SMTPConnection
        var inbound: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
        let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
        var session: SMTPServerSession
        var framer: SMTPLineFramer
        var pending: ByteBuffer
        var logger: Logger
        var queueID: QueueID?
        var incoming: IncomingMessage?
        var context: SMTPServer.Context { connection.context }

        init(
            connection: SMTPConnection, inbound: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator,
            outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
        ) {
            self.connection = connection
            self.inbound = inbound
            self.outbound = outbound
            let settings = connection.context.settings
            self.session = SMTPServerSession(
                configuration: .init(
                    hostname: settings.hostname, limits: settings.limits, tlsAvailable: false,
                    authAvailable: false, authRequired: false,
                    implicitTLS: connection.listener.kind == .submissions))
            self.framer = SMTPLineFramer(maxLineLength: settings.limits.commandLineLength)
            self.pending = ByteBuffer()
            self.logger = connection.logger
        }

        mutating func run() async {
            send(session.greeting())
            do {
                try await flush()
                try await commandLoop()
            } catch Stop.closed {
            } catch is CancellationError {
            } catch {
                logger.debug("connection error", metadata: ["error": "\(error)"])
            }
            incoming?.spool.discard()
            if Task.isCancelled && session.phase != .closed {
                // Graceful shutdown (SPEC §1.1): tell the client, then go. A message half
                // received is abandoned: it was never acknowledged.
                var buffer = ByteBuffer()
                if case .sendAndClose(let reply) = session.shuttingDown() { reply.write(to: &buffer) }
                try? await connection.channel.writeAndFlush(buffer)
            }
            logger.info("disconnect", metadata: ["event": "disconnect", "messages": "\(session.messageCount)"])
        }

        // MARK: Commands

        mutating func commandLoop() async throws {
            while true {
                while let frame = framer.nextLine() {
                    let action: SMTPServerSession.Action
                    switch frame {
                    case .lineTooLong:
                        action = session.receiveOverlongLine()
                    case .line(let line):
                        action = session.receive(Result { () throws(SMTPCommandError) in try SMTPCommand.parse(line) })
                    }
                    try await perform(action)
                }
                try await flush()
                try await read()
            }
        }

        /// Carries out one action and every action that follows from it.
        mutating func perform(_ first: SMTPServerSession.Action) async throws {
            defer {
                // A transaction that ended without a message (RSET, EHLO, a refusal) takes its
                // queue ID with it: later lines must not claim it.
                if session.transaction == nil && queueID != nil {
                    queueID = nil
                    logger[metadataKey: "queue_id"] = nil
                }
            }
            var next: SMTPServerSession.Action? = first
            while let action = next {
                next = nil
                switch action {
                case .send(let reply):
                    send(reply)
                case .sendAndClose(let reply):
                    send(reply)
                    try await flush()
                    throw Stop.closed
                case .verifySender(let sender, let parameters):
                    next = session.senderVerdict(verifySender(sender, parameters))
                case .verifyRecipient(let recipient, let parameters):
                    let verdict = context.policy.verify(recipient, client: connection.client)
                    if case .failure(let refusal) = verdict {
                        logger.info(
                            "recipient refused",
                            metadata: ["event": "reject", "to": "<\(recipient)>", "reply": "\(refusal.reply)"])
                    }
                    next = session.recipientVerdict(recipient, parameters, verdict)
                case .beginData(let reply):
                    send(reply)
                    try await flush()
                    next = try await receiveData()
                case .receiveChunk(let size, let last):
                    next = try await receiveChunk(size: size, last: last)
                case .discardChunk(let size, let reply):
                    try await skip(size)
                    send(reply)
                case .startTLS(let reply):
                    // TLS arrives with its own issue; the session never offers it until then.
                    send(reply)
                case .commit(let transaction):
                    next = await commit(transaction)
                }
            }
        }

        mutating func verifySender(_ sender: ReversePath, _ parameters: MailParameters) -> SMTPReply? {
            // SPEC §2.2: refuse before the client sends data we could not store.
            guard context.queue.hasSpace(forMessageOfSize: parameters.size ?? 0) else {
                logger.warning("queue storage low", metadata: ["event": "reject", "reply": "452 4.3.1"])
                return SMTPReply(452, EnhancedStatusCode(4, 3, 1), "Insufficient system storage")
            }
            let id = QueueID.generate()
            queueID = id
            logger[metadataKey: "queue_id"] = "\(id)"
            logger.info(
                "sender",
                metadata: [
                    "event": "mail", "from": "<\(sender)>",
                    "size": parameters.size.map { "\($0)" } ?? "-",
                ])
            return nil
        }

        // MARK: Content

        /// Opens the spool and writes our `Received:` first. The reverse lookup began at connect
        /// time and is bounded by the resolver's timeout, so this rarely waits at all.
        mutating func beginMessage(_ transaction: SMTPServerSession.Transaction) async throws -> IncomingMessage {
            if let incoming { return incoming }
            let reverseName = await connection.reverseName.value
            let id = queueID ?? QueueID.generate()
            queueID = id
            let spool = try context.queue.makeSpool(id: id)
            let single: String? =
                transaction.recipients.count == 1 ? transaction.recipients[0].path.description : nil
            let received = TraceHeaders.received(
                heloName: session.heloName, reverseName: reverseName,
                clientAddress: connection.clientAddress, hostname: context.settings.hostname,
                protocol: receivedProtocol(transaction), queueID: "\(id)", recipient: single,
                secondsSince1970: context.clock())
            let message = IncomingMessage(spool: spool, limits: context.settings.limits)
            try message.writeTrace(received)
            incoming = message
            return message
        }

        func receivedProtocol(_ transaction: SMTPServerSession.Transaction) -> TraceHeaders.ReceivedProtocol {
            if transaction.parameters.smtpUTF8 { return session.tlsActive ? .utf8smtps : .utf8smtp }
            if !session.extended { return .smtp }
            return session.tlsActive ? .esmtps : .esmtp
        }

        /// DATA: streams content until the real end (`<CRLF>.<CRLF>`, never a bare LF or CR
        /// variant) whatever happens, so that no remainder is ever read as commands.
        mutating func receiveData() async throws -> SMTPServerSession.Action {
            var decoder = SMTPDataDecoder(maxLineLength: context.settings.limits.textLineLength)
            var message: IncomingMessage?
            var setupFailure: SMTPReply?
            do {
                message = try await beginMessage(session.transaction!)
            } catch {
                logger.error("spool failed", metadata: ["error": "\(error)"])
                setupFailure = SMTPReply(452, EnhancedStatusCode(4, 3, 1), "Insufficient system storage")
            }
            try await setTimeoutPhase(.data)
            while true {
                if let chunk = framer.readData(&decoder) {
                    message?.append(chunk.content)
                    if chunk.isEnd { break }
                } else {
                    try await read()
                }
            }
            try await setTimeoutPhase(.command)
            let refusal = setupFailure ?? message?.verdict(violations: decoder.violations)
            if refusal != nil { discardIncoming() }
            return session.dataReceived(refusal: refusal)
        }

        /// BDAT: exactly `size` octets of content, no dot-unstuffing (RFC 3030 §2).
        mutating func receiveChunk(size: Int, last: Bool) async throws -> SMTPServerSession.Action {
            var message: IncomingMessage?
            var failure: SMTPReply?
            do {
                message = try await beginMessage(session.transaction!)
            } catch {
                logger.error("spool failed", metadata: ["error": "\(error)"])
                failure = SMTPReply(452, EnhancedStatusCode(4, 3, 1), "Insufficient system storage")
            }
            try await setTimeoutPhase(.data)
            var remaining = size
            while remaining > 0 {
                if let bytes = framer.readRawBytes(max: remaining) {
                    remaining -= bytes.readableBytes
                    message?.appendChunk(bytes)
                } else {
                    try await read()
                }
            }
            try await setTimeoutPhase(.command)
            let refusal = failure ?? message?.chunkVerdict(last: last)
            if refusal != nil { discardIncoming() }
            return session.chunkReceived(size: size, last: last, refusal: refusal)
        }

        mutating func skip(_ size: Int) async throws {
            var remaining = size
            try await setTimeoutPhase(.data)
            while remaining > 0 {
                if let bytes = framer.readRawBytes(max: remaining) {
                    remaining -= bytes.readableBytes
                } else {
                    try await read()
                }
            }
            try await setTimeoutPhase(.command)
        }

        mutating func discardIncoming() {
            incoming?.spool.discard()
            incoming = nil
        }

        // MARK: Queue

        /// SPEC §1.6: the 250 goes out only once the queue has the message on stable storage.
        mutating func commit(_ transaction: SMTPServerSession.Transaction) async -> SMTPServerSession.Action {
            guard let message = incoming, let id = queueID else {
                return session.messageFailed(SMTPReply(451, EnhancedStatusCode(4, 3, 0), "Error: internal error"))
            }
            incoming = nil
            queueID = nil
            let envelope = QueueEnvelope(
                transaction: transaction, clientAddress: connection.clientAddress, heloName: session.heloName)
            do {
                let queued = try await context.queue.commit(message.spool, envelope: envelope)
                logger.info(
                    "queued",
                    metadata: [
                        "event": "queued", "from": "<\(transaction.sender)>", "size": "\(queued.size)",
                        "nrcpt": "\(envelope.recipients.count)", "proto": "\(receivedProtocol(transaction).rawValue)",
                    ])
                context.onQueued(queued)
                let action = session.messageQueued(id: "\(id)")
                logger[metadataKey: "queue_id"] = nil
                return action
            } catch {
                logger.error("queue commit failed", metadata: ["event": "reject", "error": "\(error)", "reply": "452 4.3.1"])
                message.spool.discard()
                logger[metadataKey: "queue_id"] = nil
                return session.messageFailed(SMTPReply(452, EnhancedStatusCode(4, 3, 1), "Insufficient system storage"))
            }
        }

        // MARK: I/O

        mutating func send(_ reply: SMTPReply) {
            reply.write(to: &pending)
        }

        mutating func flush() async throws {
            guard pending.readableBytes > 0 else { return }
            let bytes = pending
            pending.clear()
            try await outbound.write(bytes)
        }

        mutating func read() async throws {
            guard let bytes = try await inbound.next() else { throw Stop.closed }
            framer.append(bytes)
        }

        func setTimeoutPhase(_ phase: SMTPTimeoutPhase) async throws {
            try await connection.channel.triggerUserOutboundEvent(phase)
        }
    }
}

extension QueueEnvelope {
    /// The queue's envelope for a finished transaction: one queued recipient per delivery
    /// target (aliases already expanded), each remembering the RCPT it came from (RFC 3461 ORCPT).
    init(transaction: SMTPServerSession.Transaction, clientAddress: String?, heloName: String?) {
        var seen = Set<String>()
        var recipients: [QueuedRecipient] = []
        for accepted in transaction.recipients {
            let original =
                accepted.parameters.originalRecipient.map { "\($0.addressType);\($0.address)" }
                ?? "rfc822;\(accepted.path)"
            for target in accepted.deliverTo where seen.insert(target.lowercased()).inserted {
                recipients.append(
                    QueuedRecipient(
                        address: target, originalRecipient: original,
                        notify: accepted.parameters.notify?.rawValue))
            }
        }
        self.init(
            sender: transaction.sender.description, recipients: recipients,
            bodyType: transaction.parameters.body?.rawValue, smtpUTF8: transaction.parameters.smtpUTF8,
            dsnReturn: transaction.parameters.ret?.rawValue, envelopeID: transaction.parameters.envelopeID,
            clientAddress: clientAddress, heloName: heloName, authenticatedUser: nil)
    }
}

