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
    /// 443; tests use another.
    public var port: Int
    private let exchange: HTTPSExchange

    public init(
        resolver: any DNSClient.Resolver, group: any EventLoopGroup, port: Int = 443,
        timeout: TimeAmount = .seconds(10),
        extraTrustFile: String? = nil
    ) throws {
        self.port = port
        self.exchange = try HTTPSExchange(
            resolver: resolver, group: group, timeout: timeout, extraTrustFile: extraTrustFile)
    }

    /// The policy text of `domain`, or why there is none.
    public func fetch(domain: String) async throws(TLSPolicyError) -> String {
        let host = "mta-sts.\(domain)"
        let addresses = try await exchange.addresses(of: host)
        let url = "https://\(host)\(port == 443 ? "" : ":\(port)")/.well-known/mta-sts.txt"
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/.well-known/mta-sts.txt")
        head.headers.add(name: "Accept", value: "text/plain")
        var lastError = TLSPolicyError("no address for \(host)")
        // Two addresses at most: each may cost the whole timeout.
        for address in addresses.prefix(2) {
            do throws(TLSPolicyError) {
                return try await exchange.send(host: host, address: address, port: port, head: head) { promise in
                    PolicyResponseReader(promise: promise)
                }
            } catch {
                lastError = TLSPolicyError("\(url): \(error.description)")
            }
        }
        throw lastError
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
