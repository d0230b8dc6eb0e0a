import DNSClient
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// POSTs a gzipped report to an `https:` reporting URI (RFC 8460 §5.4): the host is resolved
/// through Tern's own resolver, its certificate must be valid for it (the roots of MTA-STS),
/// only a 2xx answer counts, redirects are not followed, the answer is read to at most 64 KiB,
/// and the whole exchange has one deadline. A failure is the caller's to log; it is not retried.
public struct TLSReportUploader: Sendable {
    public var resolver: any DNSClient.Resolver
    public var group: any EventLoopGroup
    /// For URLs without a port: 443; tests use another.
    public var defaultPort: Int
    public var timeout: TimeAmount
    private let tlsContext: NIOSSLContext

    public init(
        resolver: any DNSClient.Resolver, group: any EventLoopGroup, defaultPort: Int = 443,
        timeout: TimeAmount = .seconds(30), extraTrustFile: String? = nil
    ) throws {
        self.resolver = resolver
        self.group = group
        self.defaultPort = defaultPort
        self.timeout = timeout
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .fullVerification
        configuration.minimumTLSVersion = .tlsv12
        if let extraTrustFile { configuration.additionalTrustRoots = [.file(extraTrustFile)] }
        self.tlsContext = try NIOSSLContext(configuration: configuration)
    }

    /// `https://host[:port][/path]` in parts; nil when it is not such a URL.
    static func parse(_ url: String, defaultPort: Int) -> (host: String, port: Int, path: String)? {
        guard url.lowercased().hasPrefix("https://") else { return nil }
        let rest = url.dropFirst("https://".count)
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        var path = String(rest.dropFirst(authority.count))
        if let fragment = path.firstIndex(of: "#") { path = String(path[..<fragment]) }
        if path.isEmpty || path.first == "?" { path = "/" + path }
        guard !authority.contains("@"), !authority.hasPrefix("[") else { return nil }
        var host = authority
        var port = defaultPort
        if let colon = authority.lastIndex(of: ":") {
            guard let number = Int(authority[authority.index(after: colon)...]), (1...65535).contains(number) else {
                return nil
            }
            port = number
            host = authority[..<colon]
        }
        guard !host.isEmpty, host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "-") })
        else { return nil }
        return (host.lowercased(), port, path)
    }

    /// Sends `body` (the gzipped report) to `url`, or says why not.
    public func upload(_ body: [UInt8], to url: String) async throws(TLSPolicyError) {
        guard let (host, port, path) = Self.parse(url, defaultPort: defaultPort) else {
            throw TLSPolicyError("\(url) is not an https URL Tern can use")
        }
        var addresses: [String] = []
        do throws(DNSError) {
            addresses += try await resolver.a(host).value.map(\.description)
        } catch {}
        if addresses.isEmpty {
            do throws(DNSError) {
                addresses += try await resolver.aaaa(host).value.map(\.description)
            } catch {
                throw TLSPolicyError("cannot resolve \(host): \(error)")
            }
        }
        guard let address = addresses.first else { throw TLSPolicyError("no address for \(host)") }
        let socketAddress: SocketAddress
        do {
            socketAddress = try SocketAddress(ipAddress: address, port: port)
        } catch {
            throw TLSPolicyError("bad address \(address) for \(host)")
        }
        let eventLoop = group.next()
        let promise = eventLoop.makePromise(of: Void.self)
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
                        try channel.pipeline.syncOperations.addHandler(UploadResponseReader(promise: promise))
                    }
                }
                .connect(to: socketAddress).get()
        } catch {
            throw TLSPolicyError("connect to \(host)[\(address)]:\(port): \(error)")
        }
        let timer = eventLoop.scheduleTask(in: timeout) {
            promise.fail(TLSPolicyError("no answer within \(timeout.nanoseconds / 1_000_000_000)s"))
            channel.close(promise: nil)
        }
        promise.futureResult.whenComplete { _ in
            timer.cancel()
            channel.close(promise: nil)
        }
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: path)
        head.headers.add(name: "Host", value: port == 443 ? host : "\(host):\(port)")
        head.headers.add(name: "User-Agent", value: "Tern")
        head.headers.add(name: "Content-Type", value: "application/tlsrpt+gzip")
        head.headers.add(name: "Content-Length", value: "\(body.count)")
        head.headers.add(name: "Connection", value: "close")
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        do {
            try await promise.futureResult.get()
        } catch let error as TLSPolicyError {
            throw error
        } catch {
            throw TLSPolicyError("\(error)")
        }
    }
}

/// Waits for the status of the answer: 2xx succeeds; anything else (a redirect included)
/// fails. The body is read and dropped, at most 64 KiB. Every use is on the channel's loop.
private final class UploadResponseReader: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart

    private let promise: EventLoopPromise<Void>
    private var status: HTTPResponseStatus?
    private var bodyBytes = 0
    private var done = false

    init(promise: EventLoopPromise<Void>) {
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            guard (200..<300).contains(Int(head.status.code)) else {
                let redirect = (300..<400).contains(Int(head.status.code)) ? " (redirects are not followed)" : ""
                return finish(context, TLSPolicyError("HTTP status \(head.status.code)\(redirect)"))
            }
            status = head.status
        case .body(let buffer):
            bodyBytes += buffer.readableBytes
            if bodyBytes > 64 * 1024 { finish(context, nil) }
        case .end:
            finish(context, nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(context, status == nil ? TLSPolicyError("connection closed before an answer") : nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish(context, status == nil ? TLSPolicyError("\(error)") : nil)
    }

    private func finish(_ context: ChannelHandlerContext, _ error: TLSPolicyError?) {
        guard !done else { return }
        done = true
        if let error { promise.fail(error) } else { promise.succeed(()) }
        context.close(promise: nil)
    }
}
