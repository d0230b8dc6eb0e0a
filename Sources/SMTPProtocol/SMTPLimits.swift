/// Every size limit of the SMTP codec in one place, with the RFC that sets it.
public struct SMTPLimits: Sendable, Hashable {
    /// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF. ESMTP
    /// parameters (RFC 1869 §4.1.2, RFC 3461 §4) may extend it; SIZE, BODY, RET, ENVID, NOTIFY,
    /// ORCPT and AUTH together need well under 1000 more, so 2048 octets is generous.
    public var commandLineLength: Int
    /// RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets including CRLF.
    public var textLineLength: Int
    /// RFC 1870: the SIZE advertised in EHLO, in octets.
    public var messageSize: Int
    /// RFC 5321 §4.5.3.1.8 asks servers to accept at least 100 recipients.
    public var recipients: Int
    /// All header lines of one message together (Postfix's header_size_limit is 100 KiB).
    public var headerSize: Int
    /// RFC 5321 §6.3: more `Received:` lines than this means a mail loop.
    public var receivedHeaders: Int
    /// Errors in one session before it is closed with 421 (Postfix's smtpd_hard_error_limit).
    public var errorsPerSession: Int

    public init(
        commandLineLength: Int = 2048,
        textLineLength: Int = 1000,
        messageSize: Int = 26_214_400,
        recipients: Int = 100,
        headerSize: Int = 102_400,
        receivedHeaders: Int = 100,
        errorsPerSession: Int = 20
    ) {
        self.commandLineLength = commandLineLength
        self.textLineLength = textLineLength
        self.messageSize = messageSize
        self.recipients = recipients
        self.headerSize = headerSize
        self.receivedHeaders = receivedHeaders
        self.errorsPerSession = errorsPerSession
    }

    /// RFC 5321 §4.5.3.1.1: a local part is at most 64 octets.
    public static let localPartLength = 64
    /// RFC 5321 §4.5.3.1.2: a domain is at most 255 octets.
    public static let domainLength = 255
    /// RFC 5321 §4.5.3.1.3: a reverse- or forward-path is at most 256 octets, brackets included.
    public static let pathLength = 256
    /// RFC 3461 §4.4: ENVID is at most 100 characters.
    public static let envelopeIDLength = 100
    /// RFC 3461 §4.2: ORCPT's value is at most 500 characters.
    public static let originalRecipientLength = 500
    /// RFC 1870 §3: the SIZE value is at most 20 digits.
    public static let sizeDigits = 20
    /// RFC 4954 §4: a SASL mechanism name is 1 to 20 characters.
    public static let saslMechanismLength = 20
}
