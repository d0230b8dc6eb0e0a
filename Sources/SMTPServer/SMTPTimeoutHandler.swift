import NIOCore
import SMTPProtocol

/// Which clock the timeout handler runs (RFC 5321 §4.5.3.2).
enum SMTPTimeoutPhase: Sendable {
    /// Waiting for a command: the client has `commandTimeout` from our last reply to send the
    /// next complete command. Reads do not restart the clock, so a client trickling one octet
    /// a minute cannot hold a session open.
    case command
    /// Inside DATA or BDAT content: every read restarts `dataTimeout` (§4.5.3.2.5), and the
    /// content must arrive at `minimumDataRate` octets per second on average.
    case data
}

/// Ends silent or too-slow sessions with `421 4.4.2` and closes them. The session driver moves
/// it between phases with outbound user events; every reply written restarts the clock.
final class SMTPTimeoutHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let hostname: String
    private let commandTimeout: TimeAmount
    private let dataTimeout: TimeAmount
    /// Octets per second; 0 disables the check.
    private let minimumDataRate: Int
    /// The rate is judged only after this long in the data phase, then every
    /// `rateCheckInterval`.
    private let rateGracePeriod: TimeAmount
    private var rateCheckInterval: TimeAmount { min(rateGracePeriod, .seconds(5)) }

    private var phase = SMTPTimeoutPhase.command
    private var idleTimer: Scheduled<Void>?
    private var idleDeadline: NIODeadline?
    private var rateTimer: RepeatedTask?
    private var dataStarted = NIODeadline.now()
    private var dataOctets = 0
    private var closing = false

    init(
        hostname: String, commandTimeout: TimeAmount, dataTimeout: TimeAmount, minimumDataRate: Int,
        rateGracePeriod: TimeAmount = .seconds(30)
    ) {
        self.hostname = hostname
        self.rateGracePeriod = rateGracePeriod
        self.commandTimeout = commandTimeout
        self.dataTimeout = dataTimeout
        self.minimumDataRate = minimumDataRate
    }

    func channelActive(context: ChannelHandlerContext) {
        restartIdleTimer(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        stopTimers()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stopTimers()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if phase == .data {
            dataOctets += unwrapInboundIn(data).readableBytes
            restartIdleTimer(context: context)
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if phase == .command { restartIdleTimer(context: context) }
        context.write(data, promise: promise)
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard let newPhase = event as? SMTPTimeoutPhase else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        phase = newPhase
        rateTimer?.cancel()
        rateTimer = nil
        if newPhase == .data {
            dataStarted = .now()
            dataOctets = 0
            if minimumDataRate > 0 { startRateTimer(context: context) }
        }
        restartIdleTimer(context: context)
        promise?.succeed()
    }

    private func stopTimers() {
        idleTimer?.cancel()
        idleTimer = nil
        idleDeadline = nil
        rateTimer?.cancel()
        rateTimer = nil
    }

    /// Moves the deadline. The timer itself is only rescheduled when it fires early (the
    /// deadline moved on meanwhile) or when the deadline moves closer: a session restarts the
    /// clock with every reply, and a timer per reply would cost more than the reply.
    private func restartIdleTimer(context: ChannelHandlerContext) {
        let deadline = NIODeadline.now() + (phase == .command ? commandTimeout : dataTimeout)
        let earlier = idleDeadline.map { deadline < $0 } ?? true
        idleDeadline = deadline
        if idleTimer == nil || earlier { armIdleTimer(context: context, at: deadline) }
    }

    private func armIdleTimer(context: ChannelHandlerContext, at deadline: NIODeadline) {
        idleTimer?.cancel()
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        idleTimer = context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context) = loopBound.value
            handler.idleTimerFired(context: context)
        }
    }

    private func idleTimerFired(context: ChannelHandlerContext) {
        idleTimer = nil
        guard let deadline = idleDeadline else { return }
        if NIODeadline.now() < deadline {
            armIdleTimer(context: context, at: deadline)
        } else {
            close(context: context, reason: "Error: timeout exceeded")
        }
    }

    /// Every few seconds in the data phase: after the grace period, the average rate since the
    /// content began must reach the minimum, whatever the spacing of the reads.
    private func startRateTimer(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        rateTimer = context.eventLoop.scheduleRepeatedTask(initialDelay: rateGracePeriod, delay: rateCheckInterval) {
            _ in
            let (handler, context) = loopBound.value
            handler.checkRate(context: context)
        }
    }

    private func checkRate(context: ChannelHandlerContext) {
        let seconds = Double(max(1, (NIODeadline.now() - dataStarted).nanoseconds)) / 1e9
        if Double(dataOctets) / seconds < Double(minimumDataRate) {
            close(context: context, reason: "Error: data rate too low")
        }
    }

    private func close(context: ChannelHandlerContext, reason: String) {
        guard !closing else { return }
        closing = true
        stopTimers()
        var buffer = context.channel.allocator.buffer(capacity: 80)
        SMTPReply(421, EnhancedStatusCode(4, 4, 2), "\(hostname) \(reason)").write(to: &buffer)
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in
            loopBound.value.close(promise: nil)
        }
    }
}
