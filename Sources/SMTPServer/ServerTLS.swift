import NIOConcurrencyHelpers
import NIOCore
import NIOSSL

/// The server's TLS context (SPEC §2.5): TLS 1.2 and 1.3 only, the certificate chain and key
/// from `[tls]`. `reload()` reads them again (SIGHUP): sessions already under way keep the
/// context they began with, new handshakes use the new one, and a reload that fails keeps the
/// old one serving.
public final class ServerTLS: Sendable {
    public let certificatePath: String
    public let privateKeyPath: String
    private let context: NIOLockedValueBox<NIOSSLContext>

    public init(certificatePath: String, privateKeyPath: String) throws {
        self.certificatePath = certificatePath
        self.privateKeyPath = privateKeyPath
        self.context = NIOLockedValueBox(try Self.makeContext(certificatePath, privateKeyPath))
    }

    /// Reads the certificate and key again; throws (and keeps the old ones) when they cannot be
    /// used.
    public func reload() throws {
        let fresh = try Self.makeContext(certificatePath, privateKeyPath)
        context.withLockedValue { $0 = fresh }
    }

    var current: NIOSSLContext { context.withLockedValue { $0 } }

    static func makeContext(_ certificatePath: String, _ privateKeyPath: String) throws -> NIOSSLContext {
        let chain = try NIOSSLCertificate.fromPEMFile(certificatePath)
        guard !chain.isEmpty else { throw ServerTLSError.noCertificate(certificatePath) }
        let key = try NIOSSLPrivateKey(file: privateKeyPath, format: .pem)
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        // Clients are not asked for certificates: SMTP has no use for them here.
        configuration.certificateVerification = .none
        return try NIOSSLContext(configuration: configuration)
    }

    /// The handlers that put TLS under a connection: the ServerHello sniffer (which reports
    /// the negotiated cipher) and the TLS handler itself, in pipeline order.
    func makeHandlers() -> [any ChannelHandler] {
        [TLSCipherSniffer(), NIOSSLServerHandler(context: current)]
    }
}

public enum ServerTLSError: Error, CustomStringConvertible {
    case noCertificate(String)

    public var description: String {
        switch self {
        case .noCertificate(let path): "no certificate in \(path)"
        }
    }
}

/// The TLS session's facts the `Received:` field records (SPEC §2.1).
struct NegotiatedTLS: Sendable, Hashable {
    var version: String
    var cipher: String?

    /// `using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384`, Postfix's words.
    var received: String {
        guard let cipher else { return "using \(version)" }
        return "using \(version) with cipher \(cipher)"
    }
}

extension TLSVersion {
    var name: String {
        switch self {
        case .tlsv13: "TLSv1.3"
        case .tlsv12: "TLSv1.2"
        case .tlsv11: "TLSv1.1"
        case .tlsv1: "TLSv1"
        }
    }
}
