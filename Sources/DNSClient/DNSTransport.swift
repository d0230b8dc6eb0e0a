import NIOCore
import NIOPosix

/// One query, one reply, over one fresh channel: UDP (RFC 1035 §4.2.1) or TCP with a two-octet
/// length prefix (RFC 1035 §4.2.2, RFC 7766). Every exchange ends within its timeout.
enum DNSTransport {
    static func udp(
        _ query: DNSMessage, server: SocketAddress, timeout: Duration, group: any EventLoopGroup
    ) async throws(DNSError) -> DNSMessage {
        let loop = group.next()
        let promise = loop.makePromise(of: DNSMessage.self)
        let bootstrap = DatagramBootstrap(group: loop)
            .channelOption(
                .recvAllocator,
                value: FixedSizeRecvByteBufferAllocator(capacity: DNSLimits.udpReceiveBuffer)
            )
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        UDPReplyHandler(query: query, server: server, promise: promise))
                }
            }
        // A connected socket: the kernel drops datagrams from other sources, and an ICMP
        // "port unreachable" surfaces as an error at once instead of a timeout.
        let channel = bootstrap.connect(to: server)
        channel.whenSuccess { channel in
            channel.writeAndFlush(query.encoded()).whenFailure { promise.fail($0) }
        }
        return try await complete(promise, channel: channel, timeout: timeout, server: server)
    }

    static func tcp(
        _ query: DNSMessage, server: SocketAddress, timeout: Duration, group: any EventLoopGroup
    ) async throws(DNSError) -> DNSMessage {
        let loop = group.next()
        let promise = loop.makePromise(of: DNSMessage.self)
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(TimeAmount(timeout))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(LengthPrefixedMessageDecoder()))
                    try channel.pipeline.syncOperations.addHandler(
                        TCPReplyHandler(query: query, promise: promise))
                }
            }
        let channel = bootstrap.connect(to: server)
        channel.whenSuccess { channel in
            var framed = ByteBuffer()
            do {
                // RFC 1035 §4.2.2: a two-octet length before the message.
                try framed.writeLengthPrefixed(as: UInt16.self) { buffer in
                    let start = buffer.writerIndex
                    query.write(to: &buffer)
                    return buffer.writerIndex - start
                }
            } catch {
                promise.fail(error)
                channel.close(promise: nil)
                return
            }
            channel.writeAndFlush(framed).whenFailure { promise.fail($0) }
        }
        return try await complete(promise, channel: channel, timeout: timeout, server: server)
    }

    /// Waits for the reply, the timeout or cancellation, whichever comes first, then closes
    /// the channel. Completing a promise twice is a no-op in NIO, so the racers need no lock.
    private static func complete(
        _ promise: EventLoopPromise<DNSMessage>, channel: EventLoopFuture<any Channel>,
        timeout: Duration, server: SocketAddress
    ) async throws(DNSError) -> DNSMessage {
        let timer = promise.futureResult.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            promise.fail(DNSError.temporary("no reply from \(server) within \(timeout)"))
        }
        channel.whenFailure { promise.fail($0) }
        promise.futureResult.whenComplete { _ in
            timer.cancel()
            channel.whenSuccess { $0.close(promise: nil) }
        }
        do {
            return try await withTaskCancellationHandler {
                try await promise.futureResult.get()
            } onCancel: {
                promise.fail(DNSError.temporary("lookup cancelled"))
            }
        } catch let error as DNSError {
            throw error
        } catch {
            throw .temporary("\(server): \(error)")
        }
    }

    /// A reply belongs to a query when ID, opcode and question match (RFC 5452 §4.2). Servers
    /// that reject a query (FORMERR, NOTIMP, REFUSED) may leave the question out.
    static func isReply(_ reply: DNSMessage, to query: DNSMessage) -> Bool {
        guard reply.header.isResponse, reply.header.id == query.header.id,
            reply.header.opcode == query.header.opcode
        else { return false }
        if reply.questions.isEmpty { return reply.responseCode != .noError }
        return reply.questions == query.questions
    }
}

/// Waits for the one datagram that answers the query; ignores anything else, so a spoofer or
/// a late reply to an earlier try cannot end the exchange.
final class UDPReplyHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>

    let query: DNSMessage
    let server: SocketAddress
    let promise: EventLoopPromise<DNSMessage>

    init(query: DNSMessage, server: SocketAddress, promise: EventLoopPromise<DNSMessage>) {
        self.query = query
        self.server = server
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard envelope.remoteAddress == server,
            let reply = try? DNSMessage.parse(envelope.data),
            DNSTransport.isReply(reply, to: query)
        else { return }
        promise.succeed(reply)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(DNSError.temporary("\(server): \(error)"))
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(DNSError.temporary("\(server): channel closed"))
        context.fireChannelInactive()
    }
}

/// Takes the first framed reply on the connection. Over TCP a mismatch is not a spoof to wait
/// out but a broken server: it fails the exchange.
final class TCPReplyHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    let query: DNSMessage
    let promise: EventLoopPromise<DNSMessage>

    init(query: DNSMessage, promise: EventLoopPromise<DNSMessage>) {
        self.query = query
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            let reply = try DNSMessage.parse(unwrapInboundIn(data))
            if DNSTransport.isReply(reply, to: query) {
                promise.succeed(reply)
            } else {
                promise.fail(DNSError.malformed("TCP reply does not match the query"))
            }
        } catch {
            promise.fail(DNSError.malformed("TCP reply: \(error)"))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(DNSError.temporary("TCP: \(error)"))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(DNSError.temporary("TCP connection closed before a reply"))
        context.fireChannelInactive()
    }
}

/// Splits a TCP stream into DNS messages by their two-octet length prefix (RFC 1035 §4.2.2).
struct LengthPrefixedMessageDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self),
            buffer.readableBytes >= 2 + Int(length)
        else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 2)
        context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: Int(length))!))
        return .continue
    }

    mutating func decodeLast(
        context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool
    ) throws -> DecodingState {
        try decode(context: context, buffer: &buffer)
    }
}
