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
    /// For URLs without a port: 443; tests use another.
    public var defaultPort: Int
    private let exchange: HTTPSExchange

    public init(
        resolver: any DNSClient.Resolver, group: any EventLoopGroup, defaultPort: Int = 443,
        timeout: TimeAmount = .seconds(30), extraTrustFile: String? = nil
    ) throws {
        self.defaultPort = defaultPort
        self.exchange = try HTTPSExchange(
            resolver: resolver, group: group, timeout: timeout, extraTrustFile: extraTrustFile)
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
        guard let address = try await exchange.addresses(of: host).first else {
            throw TLSPolicyError("no address for \(host)")
        }
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: path)
        head.headers.add(name: "Content-Type", value: "application/tlsrpt+gzip")
        try await exchange.send(host: host, address: address, port: port, head: head, body: body) { promise in
            UploadResponseReader(promise: promise)
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
