/// `BODY=` of RFC 6152 (8BITMIME) and RFC 3030 (BINARYMIME).
public enum BodyType: String, Sendable, Hashable {
    case sevenBit = "7BIT"
    case eightBitMIME = "8BITMIME"
    case binaryMIME = "BINARYMIME"
}

/// `RET=` of RFC 3461 §4.3.
public enum DSNReturn: String, Sendable, Hashable {
    case full = "FULL"
    case headers = "HDRS"
}

/// `NOTIFY=` of RFC 3461 §4.1: NEVER, or any of SUCCESS, FAILURE, DELAY.
public struct DSNNotify: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let success = DSNNotify(rawValue: 1)
    public static let failure = DSNNotify(rawValue: 2)
    public static let delay = DSNNotify(rawValue: 4)
    /// The empty set means NEVER.
    public static let never: DSNNotify = []
}

/// `ORCPT=addr-type;xtext` of RFC 3461 §4.2, with the xtext decoded.
public struct OriginalRecipient: Sendable, Hashable {
    public var addressType: String
    public var address: String

    public init(addressType: String, address: String) {
        self.addressType = addressType
        self.address = address
    }
}

/// The ESMTP parameters of MAIL FROM (RFC 5321 §4.1.1.2 `Mail-parameters`).
public struct MailParameters: Sendable, Hashable {
    /// `SIZE=` (RFC 1870): the size the client declares, in octets.
    public var size: Int?
    public var body: BodyType?
    /// `SMTPUTF8` (RFC 6531 §3.4).
    public var smtpUTF8: Bool
    public var ret: DSNReturn?
    /// `ENVID=` (RFC 3461 §4.4), xtext-decoded.
    public var envelopeID: String?
    /// `AUTH=` (RFC 4954 §5), xtext-decoded; `<>` when the client says the submitter is unknown.
    public var auth: String?
    /// `REQUIRETLS` (RFC 8689 §3): the message may travel only over authenticated TLS.
    public var requireTLS: Bool

    public init(
        size: Int? = nil, body: BodyType? = nil, smtpUTF8: Bool = false,
        ret: DSNReturn? = nil, envelopeID: String? = nil, auth: String? = nil, requireTLS: Bool = false
    ) {
        self.requireTLS = requireTLS
        self.size = size
        self.body = body
        self.smtpUTF8 = smtpUTF8
        self.ret = ret
        self.envelopeID = envelopeID
        self.auth = auth
    }
}

/// The ESMTP parameters of RCPT TO (RFC 5321 §4.1.1.3 `Rcpt-parameters`).
public struct RecipientParameters: Sendable, Hashable {
    /// nil when NOTIFY was not given (RFC 3461 §4.1: the default is FAILURE, DELAY).
    public var notify: DSNNotify?
    public var originalRecipient: OriginalRecipient?

    public init(notify: DSNNotify? = nil, originalRecipient: OriginalRecipient? = nil) {
        self.notify = notify
        self.originalRecipient = originalRecipient
    }
}
