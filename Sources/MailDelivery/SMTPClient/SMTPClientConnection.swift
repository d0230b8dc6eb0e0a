import NIOCore
import NIOSSL
import SMTPProtocol

/// The reply deadlines of the client (RFC 5321 §4.5.3.2), from `[delivery]`.
public struct SMTPClientTimeouts: Sendable, Hashable {
    /// TCP connect.
    public var connect: TimeAmount
    /// The greeting, EHLO, STARTTLS, MAIL, RCPT, RSET, DATA, QUIT, and each write of content
    /// (§4.5.3.2.1–.5 ask for 2 to 5 minutes).
    public var command: TimeAmount
    /// The reply after the end of data (§4.5.3.2.6: 10 minutes; the server may be filtering).
    public var dataEnd: TimeAmount

    public init(
        connect: TimeAmount = .seconds(30), command: TimeAmount = .minutes(5), dataEnd: TimeAmount = .minutes(10)
    ) {
        self.connect = connect
        self.command = command
        self.dataEnd = dataEnd
    }

    func forStage(_ stage: SMTPClientSession.Stage?) -> TimeAmount {
        stage == .dataEnd ? dataEnd : command
    }
}

/// Reads a message's content for one transfer, chunk by chunk; nil at the end.
public typealias MessageContentReader = @Sendable () async throws -> ByteBuffer?

/// An SMTP (or LMTP) session on a live connection: a `SMTPClientSession` driven over an
/// `SMTPConnection`. It belongs to one task at a time, the one that took it from the cache or
/// opened it, which is what makes the unchecked `Sendable` sound.
final class SMTPClientConnection: @unchecked Sendable {
    let connection: SMTPConnection
    private var session: SMTPClientSession
    private let timeouts: SMTPClientTimeouts
    private let tlsContext: NIOSSLContext?
    private let check: PeerCertificateCheck?
    /// `TLSv1.3` when the session runs under TLS.
    private(set) var tls: String?
    /// What the server's certificate is worth, when the session runs under TLS.
    var certificate: CertificateVerdict? { tls == nil ? nil : check?.verdict }
    /// The server offers REQUIRETLS (RFC 8689 §2); only meaningful under TLS.
    var offersRequireTLS: Bool { session.tlsActive && session.capabilities.offers("REQUIRETLS") }
    /// The server offers DSN (RFC 3461): NOTIFY and ORCPT went on with the recipients, and
    /// success notices are the next hop's to send.
    var offersDSN: Bool { session.capabilities.dsn }
    /// When the last transaction ended, for the connection cache.
    var idleSince = NIODeadline.now()
    /// Transactions run on this connection.
    private(set) var transactions = 0
    /// STARTTLS was to be tried: a TLS context, and a requirement that is not `none`.
    var triesTLS: Bool { tlsContext != nil && session.configuration.startTLS }
    /// This side's address, for TLS-RPT's `sending-mta-ip`; read at connect, as a closed
    /// channel no longer knows it.
    let localIP: String?

    private init(
        connection: SMTPConnection, session: SMTPClientSession, timeouts: SMTPClientTimeouts,
        tlsContext: NIOSSLContext?, check: PeerCertificateCheck?
    ) {
        self.connection = connection
        self.localIP = connection.channel.localAddress?.ipAddress
        self.session = session
        self.timeouts = timeouts
        self.tlsContext = tlsContext
        self.check = check
    }

    /// What went wrong opening a session; `reply` is the server's refusal, if it gave one.
    struct OpenFailure: Error, Sendable {
        var description: String
        var reply: SMTPReply?
        /// The TLS handshake failed: the same server may work without STARTTLS.
        var tlsFailed: Bool
        /// TLS was required, and the server does not offer STARTTLS or refused it.
        var startTLSMissing = false
        /// The certificate's verdict, when the handshake got that far.
        var verdict: CertificateVerdict?
        /// The connection's local address, when there was a connection.
        var localIP: String?
    }

    /// Connects, reads the greeting, says EHLO and upgrades to TLS when both sides can. With a
    /// mandatory `requirement` (a `check` that refuses bad certificates), a server without
    /// STARTTLS, or whose handshake fails, is a failure that says why (`4.7.x`), never a
    /// plaintext session.
    static func open(
        to address: SocketAddress, hostName: String, group: any EventLoopGroup,
        configuration: SMTPClientSession.Configuration, timeouts: SMTPClientTimeouts, tlsContext: NIOSSLContext?,
        requirement: TLSRequirement = TLSRequirement(level: .opportunistic, source: "may"),
        check: PeerCertificateCheck? = nil
    ) async -> Result<SMTPClientConnection, OpenFailure> {
        let connection: SMTPConnection
        do {
            connection = try await SMTPConnection.connect(
                to: address, hostName: hostName, group: group, timeout: timeouts.connect)
        } catch {
            return .failure(OpenFailure(description: error.description, reply: nil, tlsFailed: false))
        }
        var configuration = configuration
        if tlsContext == nil || requirement.level == .none { configuration.startTLS = false }
        if requirement.isMandatory { configuration.startTLS = tlsContext != nil }
        let client = SMTPClientConnection(
            connection: connection, session: SMTPClientSession(configuration: configuration), timeouts: timeouts,
            tlsContext: tlsContext, check: check)
        switch await client.drive(.none, content: nil) {
        case .ready:
            guard requirement.isMandatory, client.tls == nil else { return .success(client) }
            await client.quit()
            let reason =
                client.session.capabilities.startTLS
                ? "refused STARTTLS" : "does not offer STARTTLS"
            return .failure(
                OpenFailure(
                    description: "host \(connection.peer) \(reason), but TLS is required (\(requirement.source))",
                    reply: SMTPReply(450, EnhancedStatusCode(4, 7, 4), "TLS is required"), tlsFailed: false,
                    startTLSMissing: true, localIP: client.localIP))
        case .fail(let failure):
            let localIP = client.localIP
            connection.close()
            let tlsFailed: Bool
            if case .connection(let stage, _) = failure {
                tlsFailed = stage == .tlsHandshake || client.tls != nil
            } else {
                tlsFailed = false
            }
            if tlsFailed, requirement.mustVerify, let verdict = check?.verdict, !verdict.isVerified {
                return .failure(
                    OpenFailure(
                        description:
                            "host \(connection.peer): server certificate \(verdict) (\(requirement.source) requires a verified certificate)",
                        reply: SMTPReply(450, EnhancedStatusCode(4, 7, 5), "certificate verification failed"),
                        tlsFailed: true, verdict: verdict, localIP: localIP))
            }
            // A required TLS session that failed: 4.7.5 rather than an anonymous deferral.
            let reply =
                failure.reply
                ?? (tlsFailed && requirement.isMandatory
                    ? SMTPReply(450, EnhancedStatusCode(4, 7, 5), "TLS handshake failed") : nil)
            return .failure(
                OpenFailure(
                    description: "host \(connection.peer) \(failure)", reply: reply, tlsFailed: tlsFailed,
                    verdict: tlsFailed ? check?.verdict : nil, localIP: localIP))
        default:
            connection.close()
            return .failure(
                OpenFailure(description: "host \(connection.peer): session ended", reply: nil, tlsFailed: false))
        }
    }

    var isReusable: Bool { session.isReady && connection.isActive }

    /// One transaction. The result decides each recipient; a result with a failure leaves the
    /// connection closed.
    func run(
        _ envelope: SMTPClientSession.Envelope, content: @escaping @Sendable () async throws -> MessageContentReader
    ) async -> SMTPClientSession.TransactionResult {
        transactions += 1
        let action = await drive(session.begin(envelope), content: content)
        defer { idleSince = .now() }
        switch action {
        case .finished(let result):
            if result.failure != nil { connection.close() }
            return result
        case .fail(let failure):
            connection.close()
            return SMTPClientSession.TransactionResult(
                replies: Array(repeating: nil, count: envelope.recipients.count), failure: failure)
        default:
            connection.close()
            return SMTPClientSession.TransactionResult(
                replies: Array(repeating: nil, count: envelope.recipients.count),
                failure: .connection(stage: .idle, "session ended"))
        }
    }

    /// QUIT, a short wait for its answer, and close.
    func quit() async {
        if case .send(let buffer) = session.quit() {
            try? await connection.write(buffer, timeout: .seconds(5))
            _ = try? await connection.nextReply(timeout: .seconds(5))
        }
        connection.close()
    }

    /// Carries out actions until the session is ready, finished, failed or closed.
    private func drive(
        _ first: SMTPClientSession.Action, content: (@Sendable () async throws -> MessageContentReader)?
    ) async -> SMTPClientSession.Action {
        var action = first
        while true {
            switch action {
            case .none:
                do {
                    let reply = try await connection.nextReply(timeout: timeouts.forStage(session.stage))
                    action = session.receive(reply)
                } catch {
                    action = session.connectionFailed(error.description)
                }
            case .send(let buffer):
                do {
                    try await connection.write(buffer, timeout: timeouts.command)
                    action = .none
                } catch {
                    action = session.connectionFailed(error.description)
                }
            case .startTLS:
                do {
                    guard let tlsContext else { throw SMTPConnectionError.tlsFailed("no TLS context") }
                    try await connection.startTLS(context: tlsContext, check: check)
                    tls = "TLS"
                    action = session.tlsEstablished()
                } catch {
                    action = session.connectionFailed("\(error)")
                }
            case .sendMessage:
                do {
                    guard let content else { throw SMTPConnectionError.io("no message content") }
                    try await send(content)
                    action = session.messageSent()
                } catch {
                    action = session.connectionFailed("\(error)")
                }
            case .ready:
                if tls != nil { tls = await connection.tlsVersion() ?? "TLS" }
                return action
            case .finished, .fail, .close:
                return action
            }
        }
    }

    /// Streams the content dot-stuffed, then its end. A read error leaves the content unended:
    /// the connection is closed and nothing half-read can count as a message.
    private func send(_ content: @Sendable () async throws -> MessageContentReader) async throws {
        var encoder = SMTPDataEncoder()
        let reader = try await content()
        var output = ByteBuffer()
        while let chunk = try await reader() {
            encoder.encode(chunk, into: &output)
            if output.readableBytes >= 32 * 1024 {
                try await connection.write(output, timeout: timeouts.command)
                output = ByteBuffer()
            }
        }
        encoder.finish(into: &output)
        try await connection.write(output, timeout: timeouts.command)
    }
}
