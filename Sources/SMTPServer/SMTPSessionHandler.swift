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
    enum Mode {
        case command
        /// DATA content up to `<CRLF>.<CRLF>`, never a bare-LF or bare-CR look-alike.
        case data(SMTPDataDecoder, setupFailure: SMTPReply?)
        /// BDAT content: exactly `remaining` more octets (RFC 3030 §2).
        case chunk(size: Int, remaining: Int, last: Bool, setupFailure: SMTPReply?)
        /// Octets of a BDAT that cannot be accepted: read and dropped, then `reply`.
        case discard(remaining: Int, reply: SMTPReply)
        /// Waiting for the queue or for the reverse lookup; input stays buffered.
        case waiting
        /// The greeting is held back (`greetPause`); any input now is an early talker.
        case greeting
        case closed
    }

    let server: SMTPServer.Context
    var client: ClientFacts
    let clientAddress: String?
    var logger: Logger
    var session: SMTPServerSession
    private var framer: SMTPLineFramer
    var mode = Mode.command
    private var pendingReplies = ByteBuffer()
    var queueID: QueueID?
    var incoming: IncomingMessage?
    /// The client's confirmed name: `.some(nil)` once the lookup found none.
    var reverseName: String??
    /// Content that arrived before the reverse lookup ended waits here for it.
    private var waitingForName: Mode?
    var shutdownRequested = false
    /// Reading was paused (autoRead off) during a wait, because too much input piled up.
    private var readingPaused = false
    /// The queue has the message of `incoming` and has not answered yet.
    var commitInFlight = false
    var context: ChannelHandlerContext?
    /// The TLS session, once a handshake finished.
    private var tls: NegotiatedTLS?
    /// The cipher the sniffer saw, until the handshake's end makes `tls`.
    private var sniffedCipher: String?
    /// A STARTTLS handshake is under way; input waits for it.
    private var handshaking = false
    /// Credentials are being checked; input waits for the answer.
    private var authenticating = false
    let listenerKind: SMTPListener.Kind
    /// The anti-spam decisions of this session; nil without `CheckServices`.
    var policy: SessionPolicy?
    /// The DNS list answer for the client, started at connect.
    var dnsListLookup: EventLoopFuture<DNSListFacts>?
    /// The confirmed reverse name, when its lookup began.
    var reverseNameLookup: EventLoopFuture<String?>?
    /// The policy has been told about the connection / this HELO name.
    var policyConnected = false
    var policyHELO: String?
    /// The SPF result of the current transaction.
    var spfFacts: SPFFacts?
    /// Checks are running off the loop; input waits for them.
    var checking = false
    /// Input a waiting session keeps before it stops reading.
    static let waitingInputLimit = 64 * 1024

    init(
        server: SMTPServer.Context, listener: SMTPListener, client: ClientFacts, clientAddress: String?, logger: Logger
    ) {
        self.server = server
        self.listenerKind = listener.kind
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
        self.policy = server.checks.map { SessionPolicy(configuration: $0.policy) }
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
        guard startConnectionChecks(context: context) else { return }
        startReverseLookup(context: context)
        // Only on port 25: mail clients on the submission ports are people, not spam engines.
        if let pause = server.settings.greetPause, !client.isTrusted, listenerKind == .smtp {
            mode = .greeting
            let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: pause) { loopBound.value.greet() }
        } else {
            greet()
        }
        context.fireChannelActive()
    }

    private func greet() {
        switch mode {
        case .greeting: mode = .command
        case .command: break
        default: return  // refused as an early talker, or shut down meanwhile
        }
        send(session.greeting())
        flush()
    }

    /// RFC 5321 §3.1: the client waits for the greeting. One that talks first is a spam
    /// engine that does not read replies (postscreen's pregreet test).
    private func refuseEarlyTalker() {
        logger.info(
            "client talked before the greeting",
            metadata: ["event": "reject", "reason": "early_talker", "octets": "\(framer.bufferedByteCount)"])
        framer.discardBuffered()
        send(SMTPReply(554, EnhancedStatusCode(5, 5, 1), "Protocol error: talking before the greeting"))
        close()
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
        case .greeting:
            framer.append(unwrapInboundIn(data))
            refuseEarlyTalker()
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
            if commitInFlight || authenticating || checking { return }
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
            case .closed, .waiting, .greeting:
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
    func perform(_ first: SMTPServerSession.Action) {
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
                if let refusal = verifySender(sender, parameters) {
                    next = session.senderVerdict(refusal)
                } else if policy != nil {
                    // Nil while the checks run; they perform the verdict when they finish.
                    next = checkSender(sender)
                } else {
                    next = session.senderVerdict(nil)
                }
            case .verifyRecipient(let recipient, let parameters):
                var verdict = server.policy.verify(recipient, client: client)
                var reason: String?
                if case .success = verdict, let refusal = checkRecipient(recipient) {
                    verdict = .failure(RecipientRefusal(refusal.reply))
                    reason = refusal.reason
                }
                if case .failure(let refusal) = verdict {
                    var metadata: Logger.Metadata = [
                        "event": "reject", "to": "<\(recipient)>", "reply": "\(refusal.reply)",
                    ]
                    if let reason { metadata["reason"] = "\(reason)" }
                    logger.info("recipient refused", metadata: metadata)
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
                if policy != nil { checkContent(transaction) } else { commit(transaction) }
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
            message.observer = server.checks?.makeContentObserver?(isInbound)
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
            policy?.authenticated()
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

    func discardIncoming() {
        incoming?.spool.discard()
        incoming = nil
    }

    private func startReverseLookup(context: ChannelHandlerContext) {
        guard let address = clientAddress else { return }
        if let name = server.immediateReverseName(address) {
            reverseName = .some(name)
            reverseNameLookup = context.eventLoop.makeSucceededFuture(name)
            return
        }
        let lookup = server.reverseLookup
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let promise = context.eventLoop.makePromise(of: String?.self)
        reverseNameLookup = promise.futureResult
        Task { promise.succeed(await lookup(address)) }
        promise.futureResult.whenSuccess { name in
            loopBound.value.reverseLookupFinished(name)
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
    /// A quarantined message is `held`; a redirected one goes to `redirectTo` alone.
    func commit(_ transaction: SMTPServerSession.Transaction, held: Bool = false, redirectTo: String? = nil) {
        guard let message = incoming, let id = queueID, let context else {
            perform(session.messageFailed(SMTPReply(451, EnhancedStatusCode(4, 3, 0), "Error: internal error")))
            return
        }
        wait()
        var envelope = QueueEnvelope(
            transaction: transaction, clientAddress: clientAddress, heloName: session.heloName,
            authenticatedUser: session.authenticatedUser)
        if let redirectTo { envelope.recipients = [QueuedRecipient(address: redirectTo)] }
        let queuedEnvelope = envelope
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        commitInFlight = true
        server.queue.commit(message.spool, envelope: envelope, held: held) { result in
            eventLoop.execute {
                loopBound.value.commitFinished(result, id: id, transaction: transaction, envelope: queuedEnvelope)
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
    func wait() {
        mode = .waiting
        pauseReadingIfFull()
    }

    private func pauseReadingIfFull() {
        guard !readingPaused, framer.bufferedByteCount >= Self.waitingInputLimit else { return }
        readingPaused = true
        _ = context?.channel.setOption(ChannelOptions.autoRead, value: false)
    }

    /// After a wait: answer what is buffered, then let the channel read again.
    func readAgain() {
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

    func send(_ reply: SMTPReply) {
        reply.write(to: &pendingReplies)
    }

    private func flush() {
        guard let context, pendingReplies.readableBytes > 0 else { return }
        let bytes = pendingReplies
        pendingReplies = context.channel.allocator.buffer(capacity: 256)
        context.writeAndFlush(wrapOutboundOut(bytes), promise: nil)
    }

    func close() {
        flush()
        mode = .closed
        context?.close(promise: nil)
    }

    private func setTimeoutPhase(_ phase: SMTPTimeoutPhase) {
        context?.triggerUserOutboundEvent(phase, promise: nil)
    }

    /// Graceful shutdown (SPEC §1.1): a message half received is abandoned, it was never
    /// acknowledged.
    func shutDown() {
        guard case .sendAndClose(let reply) = session.shuttingDown() else { return }
        discardIncoming()
        send(reply)
        close()
    }
}
