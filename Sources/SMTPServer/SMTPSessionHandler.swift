import Logging
import MailMessage
import MailPolicy
import MailQueue
import NIOCore
import NIOSSL
import NIOTLS
import SMTPProtocol

/// Drives one SMTP session on its channel's event loop: frames the input, runs
/// `SMTPServerSession`, carries out its actions and writes the replies. Everything but the
/// queue commit (and a reverse lookup still under way when content begins) happens right here,
/// without leaving the event loop; while one of those is out, reading pauses and buffered input
/// waits. Replies to pipelined commands are collected and written together when a read has
/// been consumed (RFC 2920 §3.2).
final class SMTPSessionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Where the input goes next.
    private enum Mode {
        case command
        /// DATA content up to `<CRLF>.<CRLF>`, never a bare-LF or bare-CR look-alike.
        case data(SMTPDataDecoder, setupFailure: SMTPReply?)
        /// BDAT content: exactly `remaining` more octets (RFC 3030 §2).
        case chunk(size: Int, remaining: Int, last: Bool, setupFailure: SMTPReply?)
        /// Octets of a BDAT that cannot be accepted: read and dropped, then `reply`.
        case discard(remaining: Int, reply: SMTPReply)
        /// Waiting for the queue or for the reverse lookup; input stays buffered.
        case waiting
        case closed
    }

    private let server: SMTPServer.Context
    private var client: ClientFacts
    private let clientAddress: String?
    private var logger: Logger
    private var session: SMTPServerSession
    private var framer: SMTPLineFramer
    private var mode = Mode.command
    private var pendingReplies = ByteBuffer()
    private var queueID: QueueID?
    private var incoming: IncomingMessage?
    /// The client's confirmed name: `.some(nil)` once the lookup found none.
    private var reverseName: String??
    /// Content that arrived before the reverse lookup ended waits here for it.
    private var waitingForName: Mode?
    private var shutdownRequested = false
    /// Reading was paused (autoRead off) during a wait, because too much input piled up.
    private var readingPaused = false
    /// The queue has the message of `incoming` and has not answered yet.
    private var commitInFlight = false
    private var context: ChannelHandlerContext?
    /// The TLS session, once a handshake finished.
    private var tls: NegotiatedTLS?
    /// The cipher the sniffer saw, until the handshake's end makes `tls`.
    private var sniffedCipher: String?
    /// A STARTTLS handshake is under way; input waits for it.
    private var handshaking = false
    /// Credentials are being checked; input waits for the answer.
    private var authenticating = false
    /// Input a waiting session keeps before it stops reading.
    static let waitingInputLimit = 64 * 1024

    init(
        server: SMTPServer.Context, listener: SMTPListener, client: ClientFacts, clientAddress: String?, logger: Logger
    ) {
        self.server = server
        self.client = client
        self.clientAddress = clientAddress
        self.logger = logger
        let settings = server.settings
        // AUTH belongs to the submission ports (RFC 6409), and with it the duty to use it. It
        // needs TLS: without [tls] a submission port is an smtp port (see SMTPServer.run).
        let submission = listener.kind != .smtp && server.authentication != nil && server.tls != nil
        self.session = SMTPServerSession(
            configuration: .init(
                hostname: settings.hostname, limits: settings.limits,
                tlsAvailable: server.tls != nil && listener.kind != .submissions, authAvailable: submission,
                authRequired: submission, implicitTLS: listener.kind == .submissions,
                authMechanisms: server.authentication?.mechanisms ?? [],
                authFailuresPerSession: settings.authFailuresPerSession))
        self.framer = SMTPLineFramer(maxLineLength: settings.limits.commandLineLength)
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        logger.info("connect", metadata: ["event": "connect"])
        startReverseLookup(context: context)
        send(session.greeting())
        flush()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        // A message being committed belongs to the queue now; commitFinished settles it.
        if !commitInFlight {
            incoming?.spool.discard()
            incoming = nil
        }
        mode = .closed
        logger.info("disconnect", metadata: ["event": "disconnect", "messages": "\(session.messageCount)"])
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch mode {
        case .closed:
            return
        case .waiting:
            framer.append(unwrapInboundIn(data))
            pauseReadingIfFull()
        default:
            framer.append(unwrapInboundIn(data))
            process()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flush()
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSCipherSniffer.TLSCipherEvent {
            sniffedCipher = event.cipher
            return
        }
        if case TLSUserEvent.handshakeCompleted = event {
            handshakeCompleted(context: context)
            return
        }
        if event is SMTPServer.ShutdownEvent {
            shutdownRequested = true
            // A message being committed and a login being checked get their answer first
            // (commitFinished and authenticationFinished end the session then); every other
            // session ends now.
            if commitInFlight || authenticating { return }
            shutDown()
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if case NIOSSLError.uncleanShutdown = error {
            // Most clients hang up after QUIT without a TLS close_notify; nothing was lost.
            logger.debug("TLS ended without close_notify")
        } else if error is NIOSSLError || error is BoringSSLError {
            logger.info("TLS failed", metadata: ["event": "tls_error", "error": "\(error)"])
        } else {
            logger.debug("connection error", metadata: ["error": "\(error)"])
        }
        context.close(promise: nil)
    }

    // MARK: Input

    /// Consumes buffered input until it runs out or the session has to wait.
    private func process() {
        while true {
            switch mode {
            case .closed, .waiting:
                return
            case .command:
                guard let frame = framer.nextLine() else { return }
                switch frame {
                case .lineTooLong:
                    perform(session.receiveOverlongLine())
                case .line(let line) where session.awaitsSASLResponse:
                    perform(session.receiveSASLResponse(String(decoding: line.readableBytesView, as: UTF8.self)))
                case .line(let line):
                    perform(session.receive(Result { () throws(SMTPCommandError) in try SMTPCommand.parse(line) }))
                }
            case .data(var decoder, let setupFailure):
                guard let chunk = framer.readData(&decoder) else {
                    mode = .data(decoder, setupFailure: setupFailure)
                    return
                }
                incoming?.append(chunk.content)
                guard chunk.isEnd else {
                    mode = .data(decoder, setupFailure: setupFailure)
                    continue
                }
                mode = .command
                setTimeoutPhase(.command)
                let refusal = setupFailure ?? incoming?.verdict(violations: decoder.violations)
                if refusal != nil { discardIncoming() }
                perform(session.dataReceived(refusal: refusal))
            case .chunk(let size, let remaining, let last, let setupFailure):
                if remaining > 0 {
                    guard let bytes = framer.readRawBytes(max: remaining) else { return }
                    incoming?.appendChunk(bytes)
                    mode = .chunk(
                        size: size, remaining: remaining - bytes.readableBytes, last: last, setupFailure: setupFailure)
                    continue
                }
                mode = .command
                setTimeoutPhase(.command)
                let refusal = setupFailure ?? incoming?.chunkVerdict(last: last)
                if refusal != nil { discardIncoming() }
                perform(session.chunkReceived(size: size, last: last, refusal: refusal))
            case .discard(let remaining, let reply):
                if remaining > 0 {
                    guard let bytes = framer.readRawBytes(max: remaining) else { return }
                    mode = .discard(remaining: remaining - bytes.readableBytes, reply: reply)
                    continue
                }
                mode = .command
                setTimeoutPhase(.command)
                send(reply)
            }
        }
    }

    /// Carries out one action of the session and every action that follows from it.
    private func perform(_ first: SMTPServerSession.Action) {
        defer {
            // A transaction that ended without a message (RSET, EHLO, a refusal) takes its
            // queue ID with it: later lines must not claim it.
            if session.transaction == nil, queueID != nil, incoming == nil {
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
                close()
            case .verifySender(let sender, let parameters):
                next = session.senderVerdict(verifySender(sender, parameters))
            case .verifyRecipient(let recipient, let parameters):
                let verdict = server.policy.verify(recipient, client: client)
                if case .failure(let refusal) = verdict {
                    logger.info(
                        "recipient refused",
                        metadata: ["event": "reject", "to": "<\(recipient)>", "reply": "\(refusal.reply)"])
                }
                next = session.recipientVerdict(recipient, parameters, verdict)
            case .beginData(let reply):
                send(reply)
                flush()
                beginContent(
                    .data(SMTPDataDecoder(maxLineLength: server.settings.limits.textLineLength), setupFailure: nil))
            case .receiveChunk(let size, let last):
                beginContent(.chunk(size: size, remaining: size, last: last, setupFailure: nil))
            case .discardChunk(let size, let reply):
                setTimeoutPhase(.data)
                mode = .discard(remaining: size, reply: reply)
            case .startTLS(let reply):
                send(reply)
                startTLS()
            case .authenticate(let credentials):
                authenticate(credentials)
            case .commit(let transaction):
                commit(transaction)
            }
        }
    }

    private func verifySender(_ sender: ReversePath, _ parameters: MailParameters) -> SMTPReply? {
        if let refusal = server.senderPolicy?.verify(sender, client: client) {
            // The session's lines carry `sasl_username` since AUTH.
            logger.info("sender refused", metadata: ["event": "reject", "from": "<\(sender)>", "reply": "\(refusal)"])
            return refusal
        }
        // SPEC §2.2: refuse before the client sends data we could not store.
        guard server.queue.hasSpace(forMessageOfSize: parameters.size ?? 0) else {
            logger.warning("queue storage low", metadata: ["event": "reject", "reply": "452 4.3.1"])
            return SMTPReply(452, EnhancedStatusCode(4, 3, 1), "Insufficient system storage")
        }
        let id = QueueID.generate()
        queueID = id
        logger[metadataKey: "queue_id"] = "\(id)"
        logger.info(
            "sender",
            metadata: ["event": "mail", "from": "<\(sender)>", "size": parameters.size.map { "\($0)" } ?? "-"])
        return nil
    }

    // MARK: Content

    /// Content begins: its spool needs our `Received:` first, and that needs the client's
    /// name. The lookup began at connect and is bounded; if it is still out, wait for it.
    private func beginContent(_ next: Mode) {
        setTimeoutPhase(.data)
        guard reverseName != nil || clientAddress == nil else {
            waitingForName = next
            wait()
            return
        }
        mode = openSpool(next)
    }

    private func openSpool(_ next: Mode) -> Mode {
        guard incoming == nil, let transaction = session.transaction else { return next }
        do {
            let id = queueID ?? QueueID.generate()
            queueID = id
            let spool = try server.queue.makeSpool(id: id)
            let single = transaction.recipients.count == 1 ? transaction.recipients[0].path.description : nil
            let received = TraceHeaders.received(
                heloName: session.heloName, reverseName: reverseName ?? nil, clientAddress: clientAddress,
                hostname: server.settings.hostname, protocol: receivedProtocol(transaction), tls: tls?.received,
                queueID: "\(id)",
                recipient: single, secondsSince1970: server.clock())
            // RFC 6409 §8: a submission service completes what a client left out.
            let now = server.clock()
            let completion =
                session.authenticatedUser == nil
                ? nil
                : IncomingMessage.Completion(
                    messageID: "<\(id).\(now)@\(server.settings.hostname)>",
                    date: MessageDate.format(secondsSince1970: now))
            let message = IncomingMessage(spool: spool, limits: server.settings.limits, completion: completion)
            try message.writeTrace(received)
            incoming = message
            return next
        } catch {
            logger.error("spool failed", metadata: ["error": "\(error)"])
            let failure = SMTPReply(452, EnhancedStatusCode(4, 3, 1), "Insufficient system storage")
            switch next {
            case .data(let decoder, _): return .data(decoder, setupFailure: failure)
            case .chunk(let size, let remaining, let last, _):
                return .chunk(size: size, remaining: remaining, last: last, setupFailure: failure)
            default: return next
            }
        }
    }

    /// RFC 3848 and RFC 6531 §3.7.3: S for TLS, A for AUTH.
    private func receivedProtocol(_ transaction: SMTPServerSession.Transaction) -> TraceHeaders.ReceivedProtocol {
        let secure = session.tlsActive
        let authenticated = session.authenticatedUser != nil
        if transaction.parameters.smtpUTF8 {
            switch (secure, authenticated) {
            case (true, true): return .utf8smtpsa
            case (true, false): return .utf8smtps
            case (false, true): return .utf8smtpa
            case (false, false): return .utf8smtp
            }
        }
        if !session.extended { return .smtp }
        switch (secure, authenticated) {
        case (true, true): return .esmtpsa
        case (true, false): return .esmtps
        case (false, true): return .esmtpa
        case (false, false): return .esmtp
        }
    }

    // MARK: TLS

    /// RFC 3207 §4.2 and §6: the 220 is on its way; TLS goes under the session now, and what
    /// the client sent after STARTTLS in the same flight is thrown away unread, so that no
    /// plaintext command can ride into the encrypted session.
    private func startTLS() {
        flush()
        let injected = framer.bufferedByteCount
        framer.discardBuffered()
        if injected > 0 {
            logger.warning(
                "input after STARTTLS discarded", metadata: ["event": "starttls_injection", "octets": "\(injected)"])
        }
        guard let context, let tls = server.tls else { return }
        do {
            // Outermost first: the sniffer must see the records the TLS handler writes.
            for handler in tls.makeHandlers().reversed() {
                try context.pipeline.syncOperations.addHandler(handler, position: .first)
            }
        } catch {
            logger.error("STARTTLS failed", metadata: ["error": "\(error)"])
            close()
            return
        }
        handshaking = true
        wait()
    }

    private func handshakeCompleted(context: ChannelHandlerContext) {
        let handler = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self)
        tls = NegotiatedTLS(version: handler?.tlsVersion?.name ?? "TLS", cipher: sniffedCipher)
        logger.info(
            "TLS established",
            metadata: ["event": "tls", "tls_version": "\(tls!.version)", "cipher": "\(sniffedCipher ?? "-")"])
        guard handshaking else { return }  // implicit TLS: the session began secure
        handshaking = false
        if shutdownRequested {
            shutDown()
            return
        }
        session.tlsStarted()
        mode = .command
        readAgain()
    }

    // MARK: AUTH

    /// Checks the credentials off the event loop; input waits for the answer.
    private func authenticate(_ credentials: SASLCredentials) {
        guard let authentication = server.authentication, let context else {
            perform(session.authenticationFinished(.temporaryFailure))
            return
        }
        wait()
        authenticating = true
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        authentication.authenticate(
            credentials, address: clientAddress, now: server.clock(), on: context.eventLoop
        ).whenSuccess { result in
            loopBound.value.authenticationFinished(result, mechanism: credentials.mechanism)
        }
    }

    private func authenticationFinished(_ result: AuthenticationResult, mechanism: String) {
        authenticating = false
        guard case .waiting = mode else { return }  // the connection went away meanwhile
        // The user name is logged only once it is proven: a failed attempt often carries a
        // password typed into the wrong field.
        switch result {
        case .success(let user):
            client.authenticatedUser = user
            logger[metadataKey: "sasl_username"] = "\(user)"
            logger.info("authenticated", metadata: ["event": "auth", "sasl_method": "\(mechanism)"])
        case .invalid:
            logger.warning("authentication failed", metadata: ["event": "auth_failed", "sasl_method": "\(mechanism)"])
        case .temporaryFailure:
            logger.error(
                "authentication unavailable", metadata: ["event": "auth_failed", "sasl_method": "\(mechanism)"])
        case .blocked:
            logger.warning(
                "authentication refused: too many failures",
                metadata: ["event": "auth_blocked", "sasl_method": "\(mechanism)"])
        }
        mode = .command
        perform(session.authenticationFinished(result))
        if shutdownRequested {
            shutDown()
            return
        }
        readAgain()
    }

    private func discardIncoming() {
        incoming?.spool.discard()
        incoming = nil
    }

    private func startReverseLookup(context: ChannelHandlerContext) {
        guard let address = clientAddress else { return }
        if let name = server.immediateReverseName(address) {
            reverseName = .some(name)
            return
        }
        let lookup = server.reverseLookup
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        Task {
            let name = await lookup(address)
            eventLoop.execute {
                loopBound.value.reverseLookupFinished(name)
            }
        }
    }

    private func reverseLookupFinished(_ name: String?) {
        reverseName = .some(name)
        guard let next = waitingForName else { return }
        waitingForName = nil
        if shutdownRequested {
            shutDown()
            return
        }
        mode = openSpool(next)
        readAgain()
    }

    // MARK: Queue

    /// SPEC §1.6: the 250 goes out only once the queue has the message on stable storage.
    private func commit(_ transaction: SMTPServerSession.Transaction) {
        guard let message = incoming, let id = queueID, let context else {
            perform(session.messageFailed(SMTPReply(451, EnhancedStatusCode(4, 3, 0), "Error: internal error")))
            return
        }
        wait()
        let envelope = QueueEnvelope(
            transaction: transaction, clientAddress: clientAddress, heloName: session.heloName,
            authenticatedUser: session.authenticatedUser)
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        commitInFlight = true
        server.queue.commit(message.spool, envelope: envelope) { result in
            eventLoop.execute {
                loopBound.value.commitFinished(result, id: id, transaction: transaction, envelope: envelope)
            }
        }
    }

    private func commitFinished(
        _ result: Result<QueuedMessage, any Error>, id: QueueID, transaction: SMTPServerSession.Transaction,
        envelope: QueueEnvelope
    ) {
        let spool = incoming?.spool
        incoming = nil
        queueID = nil
        commitInFlight = false
        // The connection may be gone (the client did not wait for its reply): the message is
        // queued all the same, and must be logged and handed to delivery.
        let connected: Bool
        if case .waiting = mode { connected = true } else { connected = false }
        switch result {
        case .success(let queued):
            logger.info(
                "queued",
                metadata: [
                    "event": "queued", "from": "<\(transaction.sender)>", "size": "\(queued.size)",
                    "nrcpt": "\(envelope.recipients.count)", "proto": "\(receivedProtocol(transaction).rawValue)",
                ])
            server.onQueued(queued)
            guard connected else { break }
            mode = .command
            perform(session.messageQueued(id: "\(id)"))
        case .failure(let error):
            logger.error(
                "queue commit failed", metadata: ["event": "reject", "error": "\(error)", "reply": "452 4.3.1"])
            spool?.discard()
            guard connected else { break }
            mode = .command
            perform(session.messageFailed(SMTPReply(452, EnhancedStatusCode(4, 3, 1), "Insufficient system storage")))
        }
        logger[metadataKey: "queue_id"] = nil
        guard connected else { return }
        if shutdownRequested {
            shutDown()
            return
        }
        readAgain()
    }

    /// Input stays buffered until `readAgain`. A client that keeps sending while the session
    /// waits must not fill memory: past `waitingInputLimit` octets, reading pauses. (Pausing
    /// always would cost two `epoll_ctl` calls per message, for clients that almost never send
    /// anything while they wait for a reply.)
    private func wait() {
        mode = .waiting
        pauseReadingIfFull()
    }

    private func pauseReadingIfFull() {
        guard !readingPaused, framer.bufferedByteCount >= Self.waitingInputLimit else { return }
        readingPaused = true
        _ = context?.channel.setOption(ChannelOptions.autoRead, value: false)
    }

    /// After a wait: answer what is buffered, then let the channel read again.
    private func readAgain() {
        process()
        flush()
        switch mode {
        case .closed: return
        case .waiting: pauseReadingIfFull()  // the buffered input began another wait
        default:
            guard readingPaused else { return }
            readingPaused = false
            _ = context?.channel.setOption(ChannelOptions.autoRead, value: true)
        }
    }

    // MARK: Output

    private func send(_ reply: SMTPReply) {
        reply.write(to: &pendingReplies)
    }

    private func flush() {
        guard let context, pendingReplies.readableBytes > 0 else { return }
        let bytes = pendingReplies
        pendingReplies = context.channel.allocator.buffer(capacity: 256)
        context.writeAndFlush(wrapOutboundOut(bytes), promise: nil)
    }

    private func close() {
        flush()
        mode = .closed
        context?.close(promise: nil)
    }

    private func setTimeoutPhase(_ phase: SMTPTimeoutPhase) {
        context?.triggerUserOutboundEvent(phase, promise: nil)
    }

    /// Graceful shutdown (SPEC §1.1): a message half received is abandoned, it was never
    /// acknowledged.
    private func shutDown() {
        guard case .sendAndClose(let reply) = session.shuttingDown() else { return }
        discardIncoming()
        send(reply)
        close()
    }
}
