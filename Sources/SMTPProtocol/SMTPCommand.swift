/// One SMTP command line, parsed (RFC 5321 §4.1.1, RFC 3030, RFC 3207, RFC 4954).
public enum SMTPCommand: Sendable, Hashable {
    case helo(domain: String)
    case ehlo(domain: String)
    case mail(ReversePath, MailParameters)
    case rcpt(ForwardPath, RecipientParameters)
    case data
    /// `BDAT size [LAST]` (RFC 3030 §2).
    case bdat(size: Int, last: Bool)
    case rset
    case noop
    case quit
    case vrfy(String)
    case expn(String)
    case help(String?)
    case starttls
    /// `AUTH mechanism [initial-response]` (RFC 4954 §4); `=` as initial response means empty.
    case auth(mechanism: String, initialResponse: String?)
}

/// Why a command line could not be parsed; each case knows its reply (RFC 5321 §4.2.2,
/// RFC 3463, RFC 1869 §6, RFC 6531 §3.6).
public enum SMTPCommandError: Error, Sendable, Hashable {
    /// The verb is not one Tern knows: `500 5.5.2`.
    case unknownCommand
    /// A known verb with arguments that do not parse: `501 5.5.4` with a hint.
    case syntax(String)
    /// An address that does not parse: `501 5.1.3` (sender) or `501 5.1.3` (recipient).
    case badAddress(String)
    /// An ESMTP parameter Tern does not know or that is malformed: `555 5.5.4`.
    case unsupportedParameter(String)
    /// A line holding NUL or other octets no command may contain: `500 5.5.2`.
    case invalidCharacters

    public var reply: SMTPReply {
        switch self {
        case .unknownCommand:
            return SMTPReply(500, EnhancedStatusCode(5, 5, 2), "Error: command not recognized")
        case .syntax(let hint):
            return SMTPReply(501, EnhancedStatusCode(5, 5, 4), "Syntax: \(hint)")
        case .badAddress(let hint):
            return SMTPReply(501, EnhancedStatusCode(5, 1, 3), "Bad address syntax: \(hint)")
        case .unsupportedParameter(let parameter):
            return SMTPReply(555, EnhancedStatusCode(5, 5, 4), "Unsupported parameter: \(parameter)")
        case .invalidCharacters:
            return SMTPReply(500, EnhancedStatusCode(5, 5, 2), "Error: invalid characters in command")
        }
    }
}
