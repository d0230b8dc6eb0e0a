import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// One connection to a filter for one exchange, under the filter's time limits: connect within
/// `connect`, everything within `total`. At the deadline the channel is closed, which ends any
/// read or write in progress; the exchange then fails with `timedOut`, whatever the body made
/// of the closed connection. Cancelling the task closes the channel too.
enum FilterConnection {
    typealias Inbound<Element: Sendable> = NIOAsyncChannelInboundStream<Element>.AsyncIterator
    typealias Outbound<Element: Sendable> = NIOAsyncChannelOutboundWriter<Element>

    /// Connects to `endpoint`, adds the handlers `configure` adds (on the channel's event
    /// loop), and runs `body` with the connection's reader and writer. The connection is
    /// closed when `body` returns or throws. `peer` names the filter in error descriptions.
    static func exchange<In: Sendable, Out: Sendable, Result: Sendable>(
        with endpoint: FilterEndpoint, peer: String, group: any EventLoopGroup, timeouts: FilterTimeouts,
        receiving: In.Type = In.self, sending: Out.Type = Out.self,
        configure: @escaping @Sendable (any Channel) throws -> Void = { _ in },
        _ body: (inout Inbound<In>, Outbound<Out>) async throws -> Result
    ) async throws(FilterError) -> Result {
        if Task.isCancelled { throw .cancelled }
        let deadline = NIODeadline.now() + timeouts.total
        let connectTimeout = min(timeouts.connect, timeouts.total)
        let initializer: @Sendable (any Channel) -> EventLoopFuture<NIOAsyncChannel<In, Out>> = { channel in
            channel.eventLoop.makeCompletedFuture {
                try configure(channel)
                return try NIOAsyncChannel<In, Out>(wrappingChannelSynchronously: channel)
            }
        }
        let channel: NIOAsyncChannel<In, Out>
        do {
            let bootstrap = ClientBootstrap(group: group).connectTimeout(connectTimeout)
            switch endpoint {
            case .tcp(let host, let port):
                channel = try await bootstrap.connect(host: host, port: port, channelInitializer: initializer)
            case .unix(let path):
                channel = try await bootstrap.connect(unixDomainSocketPath: path, channelInitializer: initializer)
            }
        } catch let error as ChannelError where error == .connectTimeout(connectTimeout) {
            throw .connectFailed("\(peer): connect: timed out after \(seconds(connectTimeout))")
        } catch {
            throw .connectFailed("\(peer): connect: \(reason(error))")
        }

        let expired = NIOLockedValueBox(false)
        let nioChannel = channel.channel
        let timer = nioChannel.eventLoop.scheduleTask(deadline: deadline) {
            expired.withLockedValue { $0 = true }
            nioChannel.close(promise: nil)
        }
        defer { timer.cancel() }
        let timedOut = FilterError.timedOut("\(peer): no complete answer within \(seconds(timeouts.total))")
        let result: Result
        do {
            result = try await withTaskCancellationHandler {
                try await channel.executeThenClose { inbound, outbound in
                    var iterator = inbound.makeAsyncIterator()
                    return try await body(&iterator, outbound)
                }
            } onCancel: {
                nioChannel.close(promise: nil)
            }
        } catch {
            if expired.withLockedValue({ $0 }) { throw timedOut }
            if Task.isCancelled { throw .cancelled }
            if let error = error as? FilterError { throw error }
            if let error = error as? ChannelError, error == .ioOnClosedChannel || error == .eof {
                throw .connectionClosed("\(peer): connection closed")
            }
            throw .io("\(peer): \(reason(error))")
        }
        // An answer read to the end of a connection the timer closed may be cut short.
        if expired.withLockedValue({ $0 }) { throw timedOut }
        return result
    }

    /// Reads everything up to the end of the stream, at most `limit` bytes.
    static func readToEnd(_ inbound: inout Inbound<ByteBuffer>, limit: Int, peer: String) async throws -> ByteBuffer {
        var collected = ByteBuffer()
        while var chunk = try await inbound.next() {
            guard collected.readableBytes + chunk.readableBytes <= limit else {
                throw FilterError.replyTooLarge("\(peer): answer larger than \(limit) bytes")
            }
            collected.writeBuffer(&chunk)
        }
        return collected
    }

    /// "connection refused" rather than "connect(descriptor:addr:size:): Connection refused (errno: 111)".
    static func reason(_ error: any Error) -> String {
        if let error = error as? IOError { return String(cString: strerror(error.errnoCode)).lowercased() }
        if let error = error as? NIOConnectionError {
            if let first = error.connectionErrors.first { return reason(first.error) }
            if let dns = error.dnsAError ?? error.dnsAAAAError { return "cannot resolve host: \(dns)" }
            return "no address for host"
        }
        return "\(error)"
    }

    static func seconds(_ amount: TimeAmount) -> String {
        let milliseconds = amount.nanoseconds / 1_000_000
        return milliseconds % 1000 == 0 ? "\(milliseconds / 1000)s" : "\(milliseconds)ms"
    }
}
