import Foundation

/// Where a recipient's delivery stands (SPEC §2.2). `delivered` and `bounced` are final.
public enum RecipientStatus: String, Sendable, Codable, CaseIterable {
    case pending, deferred, delivered, bounced

    /// No further delivery attempt will be made.
    public var isFinal: Bool { self == .delivered || self == .bounced }
}

/// One envelope recipient with its DSN parameters (RFC 3461) and its delivery state.
public struct QueuedRecipient: Sendable, Codable, Hashable {
    /// The address to deliver to (after alias expansion by the SMTP layer).
    public var address: String
    /// ORCPT "addr-type;address" as received (RFC 3461 §4.2), or nil.
    public var originalRecipient: String?
    /// DSN NOTIFY bits as the SMTP layer encodes them; nil = not given (RFC 3461 §4.1 default).
    public var notify: UInt8?
    public var status: RecipientStatus
    public var attempts: Int
    public var nextAttempt: Date?
    public var lastError: String?

    public init(
        address: String, originalRecipient: String? = nil, notify: UInt8? = nil, status: RecipientStatus = .pending,
        attempts: Int = 0, nextAttempt: Date? = nil, lastError: String? = nil
    ) {
        self.address = address
        self.originalRecipient = originalRecipient
        self.notify = notify
        self.status = status
        self.attempts = attempts
        self.nextAttempt = nextAttempt
        self.lastError = lastError
    }

    /// Delivered or bounced: nothing more to do.
    public var isFinal: Bool { status == .delivered || status == .bounced }

    /// Due for an attempt at `now`: pending, or deferred and its retry time has come.
    public func isDue(at now: Date) -> Bool {
        switch status {
        case .pending: return true
        case .deferred: return (nextAttempt ?? .distantPast) <= now
        case .delivered, .bounced: return false
        }
    }
}

/// The SMTP envelope of a queued message (RFC 5321 §2.3.1) with the ESMTP parameters that
/// delivery must pass on (RFC 6152 BODY, RFC 6531 SMTPUTF8, RFC 3461 RET/ENVID).
public struct QueueEnvelope: Sendable, Codable, Hashable {
    /// The reverse path; "" for the null reverse path `<>`.
    public var sender: String
    public var recipients: [QueuedRecipient]
    public var bodyType: String?
    public var smtpUTF8: Bool
    public var dsnReturn: String?
    public var envelopeID: String?
    public var clientAddress: String?
    public var heloName: String?
    public var authenticatedUser: String?
    /// `REQUIRETLS` (RFC 8689 §4.1): the message goes on only over TLS with an authenticated
    /// certificate to a server that offers REQUIRETLS.
    public var requireTLS: Bool

    public init(
        sender: String, recipients: [QueuedRecipient], bodyType: String? = nil, smtpUTF8: Bool = false,
        dsnReturn: String? = nil, envelopeID: String? = nil, clientAddress: String? = nil, heloName: String? = nil,
        authenticatedUser: String? = nil, requireTLS: Bool = false
    ) {
        self.requireTLS = requireTLS
        self.sender = sender
        self.recipients = recipients
        self.bodyType = bodyType
        self.smtpUTF8 = smtpUTF8
        self.dsnReturn = dsnReturn
        self.envelopeID = envelopeID
        self.clientAddress = clientAddress
        self.heloName = heloName
        self.authenticatedUser = authenticatedUser
    }
}

extension QueueEnvelope {
    /// Decodes envelopes written before `requireTLS` existed as without it.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            sender: try container.decode(String.self, forKey: .sender),
            recipients: try container.decode([QueuedRecipient].self, forKey: .recipients),
            bodyType: try container.decodeIfPresent(String.self, forKey: .bodyType),
            smtpUTF8: try container.decode(Bool.self, forKey: .smtpUTF8),
            dsnReturn: try container.decodeIfPresent(String.self, forKey: .dsnReturn),
            envelopeID: try container.decodeIfPresent(String.self, forKey: .envelopeID),
            clientAddress: try container.decodeIfPresent(String.self, forKey: .clientAddress),
            heloName: try container.decodeIfPresent(String.self, forKey: .heloName),
            authenticatedUser: try container.decodeIfPresent(String.self, forKey: .authenticatedUser),
            requireTLS: try container.decodeIfPresent(Bool.self, forKey: .requireTLS) ?? false)
    }
}

/// A message in the queue as the queue's callers see it.
public struct QueuedMessage: Sendable, Hashable {
    public var id: QueueID
    public var arrival: Date
    /// Octets of message data.
    public var size: Int
    public var envelope: QueueEnvelope
    /// Held by an administrator or a quarantine action: not delivered until released.
    public var held: Bool
    /// The sender has been told that delivery is delayed; it is told once.
    public var delayWarned: Bool

    public init(
        id: QueueID, arrival: Date, size: Int, envelope: QueueEnvelope, held: Bool, delayWarned: Bool = false
    ) {
        self.id = id
        self.arrival = arrival
        self.size = size
        self.envelope = envelope
        self.held = held
        self.delayWarned = delayWarned
    }

    /// Every recipient is delivered or bounced: the caller may `remove` the message.
    public var isFinal: Bool { envelope.recipients.allSatisfy { $0.status.isFinal } }
}

/// The new delivery state of one recipient, as recorded after an attempt. The values are
/// absolute (not increments), so replaying the log any number of times gives the same state.
public struct RecipientChange: Sendable, Hashable {
    public var status: RecipientStatus
    public var attempts: Int
    public var nextAttempt: Date?
    public var lastError: String?

    public init(status: RecipientStatus, attempts: Int, nextAttempt: Date? = nil, lastError: String? = nil) {
        self.status = status
        self.attempts = attempts
        self.nextAttempt = nextAttempt
        self.lastError = lastError
    }
}
