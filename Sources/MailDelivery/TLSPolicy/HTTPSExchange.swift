import DNSClient
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// One HTTPS request on a fresh connection, as the MTA-STS policy fetch (RFC 8461 §3.3) and
/// the TLS-RPT upload (RFC 8460 §5.4) make it: the host resolved through Tern's own resolver,
/// its certificate verified for it (WebPKI, TLS 1.2+, the roots of SMTP plus `tls_ca_file`),
/// `Connection: close`, and one deadline for connect, handshake, request and answer, so that a
/// hanging or endless server costs at most `timeout`. What the answer means is the reader's.
struct HTTPSExchange: Sendable {
    var resolver: any DNSClient.Resolver
    var group: any EventLoopGroup
    var timeout: TimeAmount
    let tlsContext: NIOSSLContext

    init(
        resolver: any DNSClient.Resolver, group: any EventLoopGroup, timeout: TimeAmount,
        extraTrustFile: String?
    ) throws {
        self.resolver = resolver
        self.group = group
        self.timeout = timeout
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .fullVerification
        configuration.minimumTLSVersion = .tlsv12
        if let extraTrustFile { configuration.additionalTrustRoots = [.file(extraTrustFile)] }
        self.tlsContext = try NIOSSLContext(configuration: configuration)
    }

    /// The host's addresses: its A records, else its AAAA records.
    func addresses(of host: String) async throws(TLSPolicyError) -> [String] {
        var problems: [String] = []
        do throws(DNSError) {
            let found = try await resolver.a(host).value.map(\.description)
            if !found.isEmpty { return found }
        } catch {
            problems.append("A: \(error)")
        }
        do throws(DNSError) {
            let found = try await resolver.aaaa(host).value.map(\.description)
            if !found.isEmpty { return found }
        } catch {
            problems.append("AAAA: \(error)")
        }
        guard !problems.isEmpty else { throw TLSPolicyError("no address for \(host)") }
        throw TLSPolicyError("cannot resolve \(host): \(problems.joined(separator: "; "))")
    }

    /// Sends `head` (with `Host`, `User-Agent` and `Connection: close` added) and `body` to
    /// `host` at `address`, and returns what `reader` makes of the answer: the handler it makes
    /// completes the promise.
    func send<Value: Sendable>(
        host: String, address: String, port: Int, head: HTTPRequestHead, body: [UInt8]? = nil,
        reader: @escaping @Sendable (EventLoopPromise<Value>) -> any ChannelHandler
    ) async throws(TLSPolicyError) -> Value {
        let socketAddress: SocketAddress
        do {
            socketAddress = try SocketAddress(ipAddress: address, port: port)
        } catch {
            throw TLSPolicyError("bad address \(address) for \(host)")
        }
        let deadline = NIODeadline.now() + timeout
        let eventLoop = group.next()
        let promise = eventLoop.makePromise(of: Value.self)
        let tlsContext = self.tlsContext
        let timeout = self.timeout
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: eventLoop)
                .connectTimeout(timeout)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let tls = try NIOSSLClientHandler(context: tlsContext, serverHostname: host)
                        try channel.pipeline.syncOperations.addHandler(tls)
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(reader(promise))
                    }
                }
                .connect(to: socketAddress).get()
        } catch {
            promise.fail(TLSPolicyError("connect to \(host)[\(address)]:\(port): \(error)"))
            return try await Self.wait(promise.futureResult)
        }
        let timer = eventLoop.scheduleTask(deadline: deadline) {
            promise.fail(TLSPolicyError("no complete answer within \(timeout.nanoseconds / 1_000_000_000)s"))
            channel.close(promise: nil)
        }
        promise.futureResult.whenComplete { _ in
            timer.cancel()
            channel.close(promise: nil)
        }
        var head = head
        head.headers.replaceOrAdd(name: "Host", value: port == 443 ? host : "\(host):\(port)")
        head.headers.replaceOrAdd(name: "User-Agent", value: "Tern")
        head.headers.replaceOrAdd(name: "Connection", value: "close")
        if let body { head.headers.replaceOrAdd(name: "Content-Length", value: "\(body.count)") }
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if let body { channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil) }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        return try await Self.wait(promise.futureResult)
    }

    private static func wait<Value: Sendable>(_ future: EventLoopFuture<Value>) async throws(TLSPolicyError) -> Value {
        do {
            return try await future.get()
        } catch let error as TLSPolicyError {
            throw error
        } catch {
            throw TLSPolicyError("\(error)")
        }
    }
}
