import NIOCore
import NIOPosix
import NIOSSL
import SMTPProtocol

/// Why a connection to a server stopped being usable. Its description completes a log line:
/// "connect to mx1.example.net[192.0.2.1]:25: connection refused".
enum SMTPConnectionError: Error, Sendable, Hashable, CustomStringConvertible {
    case connectFailed(String)
    case timedOut
    case closed
    case malformedReply(SMTPReplyError)
    case tlsFailed(String)
    case io(String)

    var description: String {
        switch self {
        case .connectFailed(let reason): reason
        case .timedOut: "conversation timed out"
        case .closed: "lost connection"
        case .malformedReply(let error): "malformed reply (\(error))"
        case .tlsFailed(let reason): "TLS failed: \(reason)"
        case .io(let reason): reason
        }
    }
}

/// One TCP connection to an SMTP or LMTP server, read as replies. Reading and the timeouts
/// live on the channel's event loop (`ReplyReader`); the session driver awaits one reply at a
/// time. Every wait has a deadline: a server that stops answering closes the connection.
final class SMTPConnection: Sendable {
    let channel: any Channel
    /// `mx1.example.net[192.0.2.1]:25`, as logs and bounces name the server.
    let peer: String
    let hostName: String
    /// Used on the channel's event loop only.
    private let reader: ReplyReader

    private init(channel: any Channel, peer: String, hostName: String, reader: ReplyReader) {
        self.channel = channel
        self.peer = peer
        self.hostName = hostName
        self.reader = reader
    }

    static func connect(
        to address: SocketAddress, hostName: String, group: any EventLoopGroup, timeout: TimeAmount
    ) async throws(SMTPConnectionError) -> SMTPConnection {
        let peer = Self.name(of: address, hostName: hostName)
        do {
            let channel = try await ClientBootstrap(group: group)
                .connectTimeout(timeout)
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ReplyReader())
                    }
                }
                .connect(to: address).get()
            let reader = try await channel.pipeline.handler(type: ReplyReader.self).get()
            return SMTPConnection(channel: channel, peer: peer, hostName: hostName, reader: reader)
        } catch let error as ChannelError where error == .connectTimeout(timeout) {
            throw .connectFailed("connect to \(peer): timed out")
        } catch let error as IOError {
            throw .connectFailed("connect to \(peer): \(Self.reason(error))")
        } catch {
            throw .connectFailed("connect to \(peer): \(error)")
        }
    }

    /// `mx1.example.net[192.0.2.1]:25`, `192.0.2.1:25` for an address literal, the path for a
    /// Unix socket.
    static func name(of address: SocketAddress, hostName: String) -> String {
        guard let ip = address.ipAddress, let port = address.port else { return hostName }
        let literal = ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
        return hostName == ip ? literal : "\(hostName)[\(ip)]:\(port)"
    }

    /// "connection refused" rather than "connect(descriptor:addr:size:): Connection refused (errno: 111)".
    private static func reason(_ error: IOError) -> String {
        String(cString: strerror(error.errnoCode)).lowercased()
    }

    /// The next reply, or an error when none comes within `timeout`.
    func nextReply(timeout: TimeAmount) async throws(SMTPConnectionError) -> SMTPReply {
        let reader = self.reader
        let eventLoop = channel.eventLoop
        let future = eventLoop.flatSubmit { reader.next(timeout: timeout, eventLoop: eventLoop) }
        do {
            return try await future.get()
        } catch let error as SMTPConnectionError {
            throw error
        } catch {
            throw .io("\(error)")
        }
    }

    /// Writes and flushes; a write the peer does not take within `timeout` closes the
    /// connection (RFC 5321 §4.5.3.2.5's data block timeout applies to every write).
    func write(_ buffer: ByteBuffer, timeout: TimeAmount) async throws(SMTPConnectionError) {
        let channel = self.channel
        let timer = channel.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
        defer { timer.cancel() }
        do {
            try await channel.writeAndFlush(buffer).get()
        } catch {
            throw channel.isActive ? .io("write failed: \(error)") : .closed
        }
    }

    /// Puts TLS under the reply reader (RFC 3207): call after the server's 220 to STARTTLS. The
    /// handshake runs with the next write; a failed one fails the next read. `check` verifies
    /// the server's certificate in the handshake and may refuse it (MTA-STS, DANE, `verify`);
    /// without one, any certificate is taken.
    func startTLS(context: NIOSSLContext, check: PeerCertificateCheck?) async throws(SMTPConnectionError) {
        let reader = self.reader
        let channel = self.channel
        let hostName = self.hostName
        do {
            try await channel.eventLoop.submit {
                // Anything the server sent after its 220 arrived in plaintext: injected, never read.
                guard reader.isIdle else { throw SMTPConnectionError.tlsFailed("data after the 220 to STARTTLS") }
                // SNI names the exchanger; an address literal has no name to send.
                let handler: NIOSSLClientHandler
                if let check {
                    let callback: NIOSSLCustomVerificationCallback = { certificates, promise in
                        check.verify(certificates, promise: promise)
                    }
                    handler =
                        try
                        (try? NIOSSLClientHandler(
                            context: context, serverHostname: hostName, customVerificationCallback: callback))
                        ?? NIOSSLClientHandler(
                            context: context, serverHostname: nil, customVerificationCallback: callback)
                } else {
                    handler =
                        try (try? NIOSSLClientHandler(context: context, serverHostname: hostName))
                        ?? NIOSSLClientHandler(context: context, serverHostname: nil)
                }
                try channel.pipeline.syncOperations.addHandler(handler, position: .first)
            }.get()
        } catch let error as SMTPConnectionError {
            throw error
        } catch {
            throw .tlsFailed("\(error)")
        }
    }

    /// `TLSv1.3` once TLS is up, else nil.
    func tlsVersion() async -> String? {
        guard let version = try? await channel.nioSSL_tlsVersion().get() else { return nil }
        return switch version {
        case .tlsv13: "TLSv1.3"
        case .tlsv12: "TLSv1.2"
        case .tlsv11: "TLSv1.1"
        case .tlsv1: "TLSv1"
        }
    }

    var isActive: Bool { channel.isActive }

    func close() {
        channel.close(promise: nil)
    }
}

/// Collects the server's replies on the event loop and hands them out one by one. Every use is
/// on the channel's event loop (`SMTPConnection` submits each call there); the unchecked
/// `Sendable` only lets the connection hold it.
private final class ReplyReader: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer

    private var parser = SMTPReplyParser()
    private var replies = CircularBuffer<SMTPReply>()
    private var waiter: EventLoopPromise<SMTPReply>?
    private var timer: Scheduled<Void>?
    private var ended: SMTPConnectionError?
    private var context: ChannelHandlerContext?

    /// No reply and no partial reply is buffered.
    var isIdle: Bool { replies.isEmpty && parser.isEmpty }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func next(timeout: TimeAmount, eventLoop: any EventLoop) -> EventLoopFuture<SMTPReply> {
        if let reply = replies.popFirst() { return eventLoop.makeSucceededFuture(reply) }
        if let ended { return eventLoop.makeFailedFuture(ended) }
        guard context != nil else { return eventLoop.makeFailedFuture(SMTPConnectionError.closed) }
        precondition(waiter == nil, "one reply is awaited at a time")
        let promise = eventLoop.makePromise(of: SMTPReply.self)
        waiter = promise
        timer = eventLoop.scheduleTask(in: timeout) { [self] in
            end(.timedOut)
            self.context?.close(promise: nil)
        }
        return promise.futureResult
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        parser.append(unwrapInboundIn(data))
        do {
            while let reply = try parser.nextReply() {
                if let waiter {
                    self.waiter = nil
                    timer?.cancel()
                    waiter.succeed(reply)
                } else {
                    replies.append(reply)
                }
            }
        } catch {
            end(.malformedReply(error))
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        end(.closed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is NIOSSLError || error is BoringSSLError {
            end(.tlsFailed("\(error)"))
        } else {
            end(.io("\(error)"))
        }
        context.close(promise: nil)
    }

    private func end(_ error: SMTPConnectionError) {
        if ended == nil { ended = error }
        timer?.cancel()
        if let waiter {
            self.waiter = nil
            waiter.fail(ended ?? error)
        }
    }
}
