import MailQueue
import NIOCore
import SMTPProtocol

/// Local delivery over LMTP (RFC 2033), e.g. to Dovecot's `lmtp` service: one transaction per
/// message for all its local recipients, and one reply per recipient after the content, so
/// that a full mailbox defers only its own recipient.
public final class LMTPDelivery: Sendable {
    public enum Target: Sendable, Hashable, CustomStringConvertible {
        case unix(path: String)
        case tcp(host: String, port: Int)

        /// The server's name in logs and bounces: the socket's path, or the host.
        var host: String {
            switch self {
            case .unix(let path): path
            case .tcp(let host, _): host
            }
        }

        public var description: String {
            switch self {
            case .unix(let path): "unix:\(path)"
            case .tcp(let host, let port): "\(host):\(port)"
            }
        }
    }

    private let target: Target
    private let heloName: String
    private let group: any EventLoopGroup
    private let timeouts: SMTPClientTimeouts

    public init(target: Target, heloName: String, group: any EventLoopGroup, timeouts: SMTPClientTimeouts) {
        self.target = target
        self.heloName = heloName
        self.group = group
        self.timeouts = timeouts
    }

    /// One outcome per recipient, in order. A server that cannot be reached or fails during the
    /// session defers every recipient it did not answer for.
    func deliver(
        _ message: QueuedMessage, recipients: [QueuedRecipient], eightBit: Bool,
        content: @escaping @Sendable () async throws -> MessageContentReader
    ) async -> [DeliveryOutcome] {
        let address: SocketAddress
        do {
            switch target {
            case .unix(let path): address = try SocketAddress(unixDomainSocketPath: path)
            case .tcp(let host, let port): address = try SocketAddress.makeAddressResolvingHost(host, port: port)
            }
        } catch {
            let outcome = DeliveryOutcome(kind: .deferred, status: "4.3.0", text: "LMTP server \(target): \(error)")
            return Array(repeating: outcome, count: recipients.count)
        }
        let opened = await SMTPClientConnection.open(
            to: address, hostName: target.host, group: group,
            configuration: SMTPClientSession.Configuration(heloName: heloName, lmtp: true), timeouts: timeouts,
            tlsContext: nil)
        let client: SMTPClientConnection
        switch opened {
        case .success(let connection): client = connection
        case .failure(let failure):
            let outcome = DeliveryOutcome(kind: .deferred, status: "4.4.1", text: failure.description)
            return Array(repeating: outcome, count: recipients.count)
        }
        let envelope = SMTPClientSession.Envelope(
            sender: message.envelope.sender,
            recipients: recipients.map { SMTPClientSession.Recipient(address: $0.address) }, size: message.size,
            eightBit: eightBit, smtpUTF8: message.envelope.smtpUTF8)
        let result = await client.run(envelope, content: content)
        if result.failure == nil { await client.quit() }
        let relay = "lmtp:\(target)"
        return result.replies.map { reply in
            guard let reply else {
                return DeliveryOutcome(
                    kind: .deferred, status: "4.4.2", text: result.failure.map { "\($0)" } ?? "no reply", relay: relay)
            }
            return DeliveryOutcome.from(reply, host: target.description, relay: relay)
        }
    }
}
