import NIOCore

/// Learns the negotiated cipher suite from the ServerHello this server writes (RFC 8446 §4.1.3,
/// RFC 5246 §7.4.1.3) and reports it up the pipeline as a `TLSCipherEvent`; after that it only
/// passes writes on. (It stays in the pipeline: removing it from inside `write` loses the flush
/// that follows the handshake's first flight.)
/// swift-nio-ssl does not expose the cipher, and `Received:` should name it. Sits between the
/// socket and the TLS handler, so it sees the raw records going out; it never changes them.
final class TLSCipherSniffer: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Reported once the ServerHello has gone out.
    struct TLSCipherEvent: Sendable, Hashable {
        var cipher: String
    }

    /// The first flight is kept until the ServerHello's cipher field is in it; a hello is far
    /// smaller than this.
    private var seen = ByteBuffer()
    private var done = false
    private static let limit = 16 * 1024

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if !done {
            var bytes = unwrapOutboundIn(data)
            seen.writeBuffer(&bytes)
            switch Self.cipherSuite(in: seen) {
            case .some(.some(let suite)):
                done = true
                context.fireUserInboundEventTriggered(TLSCipherEvent(cipher: Self.name(of: suite)))
            case .some(.none):
                done = true
            case .none:
                if seen.readableBytes > Self.limit { done = true }
            }
            if done { seen = ByteBuffer() }
        }
        context.write(data, promise: promise)
    }

    /// The cipher suite of the ServerHello at the start of `bytes`: nil while more is needed,
    /// `.some(nil)` when the bytes are not a ServerHello.
    static func cipherSuite(in bytes: ByteBuffer) -> UInt16?? {
        // TLSPlaintext: type(1) = 22 handshake, version(2), length(2), then the Handshake:
        // msg_type(1) = 2 server_hello, length(3), legacy_version(2), random(32),
        // legacy_session_id<0..32>, cipher_suite(2).
        guard let type: UInt8 = bytes.getInteger(at: bytes.readerIndex) else { return .none }
        guard type == 22 else { return .some(nil) }
        let body = bytes.readerIndex + 5
        guard let messageType: UInt8 = bytes.getInteger(at: body) else { return .none }
        guard messageType == 2 else { return .some(nil) }
        let sessionIDLength = body + 4 + 2 + 32
        guard let idLength: UInt8 = bytes.getInteger(at: sessionIDLength) else { return .none }
        guard idLength <= 32 else { return .some(nil) }
        guard let suite: UInt16 = bytes.getInteger(at: sessionIDLength + 1 + Int(idLength)) else { return .none }
        return .some(suite)
    }

    /// IANA's names (https://www.iana.org/assignments/tls-parameters) for the suites BoringSSL
    /// negotiates at TLS 1.2 and 1.3; any other is named by its number.
    static func name(of suite: UInt16) -> String {
        switch suite {
        case 0x1301: "TLS_AES_128_GCM_SHA256"
        case 0x1302: "TLS_AES_256_GCM_SHA384"
        case 0x1303: "TLS_CHACHA20_POLY1305_SHA256"
        case 0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
        case 0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
        case 0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        case 0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
        case 0xCCA8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
        case 0xCCA9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        case 0xC009: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"
        case 0xC00A: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"
        case 0xC013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"
        case 0xC014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"
        case 0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256"
        case 0x009D: "TLS_RSA_WITH_AES_256_GCM_SHA384"
        case 0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA"
        case 0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA"
        default: "0x" + String(suite, radix: 16, uppercase: true)
        }
    }
}
