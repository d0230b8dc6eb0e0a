import DNSClient
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// Fetches `https://mta-sts.<domain>/.well-known/mta-sts.txt` (RFC 8461 §3.3): the host is
/// resolved through Tern's own resolver, the certificate must be valid for it (WebPKI, the
/// same roots as SMTP plus `tls_ca_file`), redirects are not followed, only `200` with a
/// `text/plain` body of at most 64 KiB counts, and the whole exchange has one deadline, so a
/// hanging or endless server costs at most `timeout`.
public struct MTASTSFetcher: Sendable {
    public var resolver: any DNSClient.Resolver
    public var group: any EventLoopGroup
    /// 443; tests use another.
    public var port: Int
    public var timeout: TimeAmount
    private let tlsContext: NIOSSLContext

    public init(
        resolver: any DNSClient.Resolver, group: any EventLoopGroup, port: Int = 443,
        timeout: TimeAmount = .seconds(10),
        extraTrustFile: String? = nil
    ) throws {
        self.resolver = resolver
        self.group = group
        self.port = port
        self.timeout = timeout
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .fullVerification
        configuration.minimumTLSVersion = .tlsv12
        if let extraTrustFile { configuration.additionalTrustRoots = [.file(extraTrustFile)] }
        self.tlsContext = try NIOSSLContext(configuration: configuration)
    }

    /// The policy text of `domain`, or why there is none.
    public func fetch(domain: String) async throws(TLSPolicyError) -> String {
        let host = "mta-sts.\(domain)"
        var addresses: [String] = []
        var problems: [String] = []
        do throws(DNSError) {
            addresses += try await resolver.a(host).value.map(\.description)
        } catch {
            problems.append("A: \(error)")
        }
        if addresses.isEmpty {
            do throws(DNSError) {
                addresses += try await resolver.aaaa(host).value.map(\.description)
            } catch {
                problems.append("AAAA: \(error)")
            }
        }
        guard !addresses.isEmpty else {
            throw TLSPolicyError("cannot resolve \(host): \(problems.joined(separator: "; "))")
        }
        var lastError = TLSPolicyError("no address for \(host)")
        // Two addresses at most: each may cost the whole timeout.
        for address in addresses.prefix(2) {
            do throws(TLSPolicyError) {
                return try await fetch(host: host, address: address)
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    private func fetch(host: String, address: String) async throws(TLSPolicyError) -> String {
        let socketAddress: SocketAddress
        do {
            socketAddress = try SocketAddress(ipAddress: address, port: port)
        } catch {
            throw TLSPolicyError("bad address \(address) for \(host)")
        }
        let url = "https://\(host)\(port == 443 ? "" : ":\(port)")/.well-known/mta-sts.txt"
        let deadline = NIODeadline.now() + timeout
        let eventLoop = group.next()
        let promise = eventLoop.makePromise(of: String.self)
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
                        try channel.pipeline.syncOperations.addHandler(PolicyResponseReader(promise: promise))
                    }
                }
                .connect(to: socketAddress).get()
        } catch {
            promise.fail(TLSPolicyError("connect to \(host)[\(address)]:\(port): \(error)"))
            return try await Self.wait(promise.futureResult)
        }
        // One deadline for the handshake, the request and the whole body.
        let timer = eventLoop.scheduleTask(deadline: deadline) {
            promise.fail(TLSPolicyError("\(url): no complete answer within \(timeout.nanoseconds / 1_000_000_000)s"))
            channel.close(promise: nil)
        }
        promise.futureResult.whenComplete { _ in
            timer.cancel()
            channel.close(promise: nil)
        }
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/.well-known/mta-sts.txt")
        head.headers.add(name: "Host", value: port == 443 ? host : "\(host):\(port)")
        head.headers.add(name: "User-Agent", value: "Tern")
        head.headers.add(name: "Accept", value: "text/plain")
        head.headers.add(name: "Connection", value: "close")
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        do throws(TLSPolicyError) {
            return try await Self.wait(promise.futureResult)
        } catch {
            throw TLSPolicyError("\(url): \(error.description)")
        }
    }

    private static func wait(_ future: EventLoopFuture<String>) async throws(TLSPolicyError) -> String {
        do {
            return try await future.get()
        } catch let error as TLSPolicyError {
            throw error
        } catch {
            throw TLSPolicyError("\(error)")
        }
    }
}

/// Reads one HTTP response into its body text, refusing what RFC 8461 §3.3 refuses: any status
/// but 200 (redirects included), a media type other than text/plain, and (Tern's bound) more
/// than 64 KiB. Every use is on the channel's event loop.
private final class PolicyResponseReader: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart

    private let promise: EventLoopPromise<String>
    private var body: [UInt8] = []
    private var done = false

    init(promise: EventLoopPromise<String>) {
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            guard head.status == .ok else {
                let redirect = (300..<400).contains(Int(head.status.code)) ? " (redirects are not followed)" : ""
                return fail(context, "HTTP status \(head.status.code)\(redirect)")
            }
            let type = head.headers.first(name: "Content-Type")?.lowercased() ?? ""
            guard type.hasPrefix("text/plain") else {
                return fail(context, "Content-Type \"\(type)\" is not text/plain")
            }
            if let length = head.headers.first(name: "Content-Length").flatMap(Int.init),
                length > MTASTSPolicy.maximumSize
            {
                return fail(context, "policy larger than \(MTASTSPolicy.maximumSize / 1024) KiB")
            }
        case .body(let buffer):
            guard body.count + buffer.readableBytes <= MTASTSPolicy.maximumSize else {
                return fail(context, "policy larger than \(MTASTSPolicy.maximumSize / 1024) KiB")
            }
            body += buffer.readableBytesView
        case .end:
            done = true
            guard let text = String(validating: body, as: UTF8.self) else {
                return promise.fail(TLSPolicyError("policy is not UTF-8 text"))
            }
            promise.succeed(text)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(context, "connection closed before the end of the response")
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(context, "\(error)")
    }

    private func fail(_ context: ChannelHandlerContext, _ reason: String) {
        guard !done else { return }
        done = true
        promise.fail(TLSPolicyError(reason))
        context.close(promise: nil)
    }
}
