import MailMessage
import MailPolicy
import NIOCore
import SMTPProtocol

/// The anti-spam and sender-authentication services sessions ask (SPEC §2.6), as the service
/// layer wires them from `[checks]`, `[[rules]]` and `[limits]`. Each one is optional; a
/// session without `CheckServices` runs none of them. Every async service bounds its own time.
public struct CheckServices: Sendable {
    public var policy: SessionPolicy.Configuration
    /// The DNS lists that list a client, and their summed weight.
    public var dnsLists: (@Sendable (_ client: String) async -> DNSListFacts)?
    /// What the HELO checks find (`HELOFinding` names).
    public var heloFindings: (@Sendable (_ helo: String, _ client: String?) async -> Set<String>)?
    /// SPF for the MAIL FROM identity (the HELO identity for `<>`).
    public var spf: (@Sendable (_ client: String, _ sender: String, _ helo: String) async -> SPFFacts)?
    /// Greylisting: nil lets the recipient pass, a reply defers it.
    public var greylist: (@Sendable (_ client: String, _ sender: String, _ recipient: String) -> SMTPReplyOrPass)?
    /// Per-client rates; false means over the limit.
    public var admitConnection: (@Sendable (_ client: String) -> Bool)?
    public var admitMessage: (@Sendable (_ client: String) -> Bool)?
    public var admitRecipient: (@Sendable (_ client: String) -> Bool)?
    /// A fresh content observer per message: it sees the content as it streams in (DKIM
    /// verifies inbound mail, signs the rest). Nil when there is nothing to observe.
    public var makeContentObserver: (@Sendable (_ inbound: Bool) -> (any ContentObserver)?)?
    /// DKIM, DMARC and the content filters at the end of the content.
    public var content: (@Sendable (ContentCheckInput) async -> ContentFacts)?
    /// Content larger than this is not given to the filters; 0 when there are none, so that
    /// only the header section is read back at the end of DATA.
    public var filterMaxSize: Int

    public init(policy: SessionPolicy.Configuration, filterMaxSize: Int = 1_048_576) {
        self.policy = policy
        self.filterMaxSize = filterMaxSize
    }
}

/// A greylisting answer.
public enum SMTPReplyOrPass: Sendable, Hashable {
    case pass
    case refuse(SMTPReply)
}

public struct DNSListFacts: Sendable, Hashable {
    public var listedZones: Set<String>
    public var score: Double
    /// `zone=answer` for each listing, for the log.
    public var detail: [String]

    public init(listedZones: Set<String> = [], score: Double = 0, detail: [String] = []) {
        self.listedZones = listedZones
        self.score = score
        self.detail = detail
    }
}

public struct SPFFacts: Sendable, Hashable {
    /// RFC 8601 result name.
    public var result: String
    /// The identity checked: `mailfrom` or `helo` (RFC 8601 `smtp.mailfrom`, `smtp.helo`),
    /// and its mailbox or name.
    public var property: String
    public var value: String
    public var explanation: String?
    /// The `Received-SPF:` field, without CRLF (RFC 7208 §9.1); nil to add none.
    public var receivedSPF: String?
    /// The domain SPF authenticated, for DMARC alignment (RFC 7489 §3.1.2).
    public var domain: String

    public init(
        result: String, property: String, value: String, domain: String, explanation: String? = nil,
        receivedSPF: String? = nil
    ) {
        self.result = result
        self.property = property
        self.value = value
        self.domain = domain
        self.explanation = explanation
        self.receivedSPF = receivedSPF
    }
}

/// Sees a message's content as it streams in, exactly as the client sent it (before any field
/// Tern adds): a DKIM verifier or signer hashing the body without keeping it.
public protocol ContentObserver: AnyObject, Sendable {
    func observe(_ content: ByteBuffer)
}

public struct ContentCheckInput: Sendable {
    /// The content as stored (our trace fields first) if it is at most `filterMaxSize`; nil
    /// for larger mail, which the filters skip.
    public var message: ByteBuffer?
    /// The header fields as the client sent them, unfolded.
    public var header: [(name: String, value: String)]
    public var observer: (any ContentObserver)?
    public var spf: SPFFacts?
    public var client: String?
    public var clientName: String?
    public var helo: String?
    public var sender: String
    public var recipients: [String]
    public var authenticatedUser: String?
    public var queueID: String
    /// Content checks that only concern inbound mail (DKIM verification, DMARC, filters) are
    /// skipped for trusted or authenticated senders; signing is not.
    public var inbound: Bool
}

public struct ContentFacts: Sendable {
    /// `pass`, `fail`, `none` … for the rules.
    public var dkim: String?
    public var dmarc: SessionPolicy.DMARCOutcome?
    public var filters: [SessionPolicy.FilterResult]
    /// RFC 8601 method results (`dkim=pass header.d=… header.s=…`), in order.
    public var authenticationResults: [AuthenticationResults.MethodResult]
    /// Fields the filters asked to add (`X-Spam-Status: …`), without CRLF.
    public var filterFields: [String]
    /// A DKIM signature to prepend (`DKIM-Signature: …`), without the final CRLF.
    public var signature: String?

    public init(
        dkim: String? = nil, dmarc: SessionPolicy.DMARCOutcome? = nil, filters: [SessionPolicy.FilterResult] = [],
        authenticationResults: [AuthenticationResults.MethodResult] = [], filterFields: [String] = [],
        signature: String? = nil
    ) {
        self.dkim = dkim
        self.dmarc = dmarc
        self.filters = filters
        self.authenticationResults = authenticationResults
        self.filterFields = filterFields
        self.signature = signature
    }
}
