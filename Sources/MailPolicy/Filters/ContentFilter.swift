import NIOCore
import SMTPProtocol

/// A content filter asked about one message at the end of DATA: SpamAssassin's spamd, rspamd,
/// a milter. It answers with a verdict; what the verdict leads to (reject, tag, quarantine) is
/// for the rules that read it.
///
/// `check` gets the whole message (header section and body, CRLF line ends, no dot-stuffing)
/// and the envelope. It never waits longer than its own time limits, and every way it can fail
/// is a `FilterError`, so that the caller can choose per filter whether a broken filter lets
/// the message through (fail open) or defers it.
public protocol ContentFilter: Sendable {
    /// How the filter is named in logs and in verdicts: `spamd`, `rspamd`, `milter:opendkim`.
    var name: String { get }

    func check(_ message: ByteBuffer, envelope: FilterEnvelope) async throws(FilterError) -> FilterVerdict
}

/// What the server knows about a message when it asks a filter: the client, the session and
/// the transaction.
public struct FilterEnvelope: Sendable, Hashable {
    /// The client's address; nil for a message submitted locally (`tern sendmail`).
    public var clientAddress: IPAddress?
    /// The client's TCP port, when known (milters get it in their connect event).
    public var clientPort: Int?
    /// The client's verified reverse name (forward-confirmed), nil when it has none.
    public var clientName: String?
    /// The name the client gave in HELO/EHLO, nil when it gave none.
    public var helo: String?
    /// The SASL identity the client authenticated as, nil when it did not.
    public var authenticatedUser: String?
    /// The reverse-path without angle brackets: `""` for the null reverse-path `<>`.
    public var sender: String
    /// The forward-paths accepted for this message, without angle brackets.
    public var recipients: [String]
    /// The message's queue ID, as every log line about it carries.
    public var queueID: String
    /// This server's host name (the greeting's).
    public var hostname: String

    public init(
        clientAddress: IPAddress?, clientPort: Int? = nil, clientName: String?, helo: String?,
        authenticatedUser: String?, sender: String, recipients: [String], queueID: String, hostname: String
    ) {
        self.clientAddress = clientAddress
        self.clientPort = clientPort
        self.clientName = clientName
        self.helo = helo
        self.authenticatedUser = authenticatedUser
        self.sender = sender
        self.recipients = recipients
        self.queueID = queueID
        self.hostname = hostname
    }

    /// The client address as filters expect it: an IPv4-mapped IPv6 address as dotted quad.
    var clientAddressText: String? {
        guard let clientAddress else { return nil }
        return (clientAddress.unmappedIPv4 ?? clientAddress).description
    }
}

/// What a filter asked the server to do with the message as a whole.
public enum FilterAction: Sendable, Hashable, CustomStringConvertible {
    /// The filter gave no instruction (spamd never does; rspamd's `no action`, `add header`,
    /// `rewrite subject`): the rules decide from the score and symbols.
    case none
    /// The filter explicitly accepts the message (a milter's accept or continue).
    case accept
    /// Refuse the message with this 5xx reply.
    case reject(SMTPReply)
    /// Defer the message with this 4xx reply (rspamd's `greylist` and `soft reject`, a milter's
    /// tempfail). A milter's shutdown or connection-failure request is a `421` reply: the
    /// server should close the session after sending it.
    case tempfail(SMTPReply)
    /// Accept the message and drop it silently.
    case discard
    /// Accept the message and hold it for an administrator, with the filter's reason.
    case quarantine(reason: String)

    public var description: String {
        switch self {
        case .none: "none"
        case .accept: "accept"
        case .reject(let reply): "reject (\(reply))"
        case .tempfail(let reply): "tempfail (\(reply))"
        case .discard: "discard"
        case .quarantine(let reason): "quarantine (\(reason))"
        }
    }
}

/// One header field a filter wants added.
///
/// `value` is the field body after the colon, without the space that usually follows it; a
/// folded value keeps its line breaks as CRLF, each followed by a space or tab, so that writing
/// `"\(name): \(value)\r\n"` gives a well-formed field. Filters' own line breaks are
/// normalised to that form, and a break not followed by white space gets a tab: no filter can
/// end the header section or add a field by smuggling a line break.
public struct FilterHeaderField: Sendable, Hashable, CustomStringConvertible {
    public var name: String
    public var value: String

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }

    public var description: String { "\(name): \(value)" }

    /// A field from a filter's reply: the name must be a field name (RFC 5322 §2.2: printable
    /// US-ASCII except colon, at least one character), the value is normalised as the type
    /// describes.
    static func validated(name: some Collection<UInt8>, value: some Collection<UInt8>, from filter: String)
        throws(FilterError) -> FilterHeaderField
    {
        guard let name = validatedName(name) else {
            throw .malformedReply(
                "\(filter): bad header field name \(String(decoding: name.prefix(80), as: UTF8.self).debugDescription)")
        }
        return FilterHeaderField(name: name, value: normalizedValue(value))
    }

    static func validatedName(_ bytes: some Collection<UInt8>) -> String? {
        guard !bytes.isEmpty, bytes.count <= 998,
            bytes.allSatisfy({ (33...126).contains($0) && $0 != UInt8(ascii: ":") })
        else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Line breaks (CRLF, LF or a lone CR) become CRLF followed by white space; empty or blank
    /// continuation lines are dropped (an empty line would end the header section); other
    /// control characters but tab are dropped; leading white space of the first line goes.
    static func normalizedValue(_ bytes: some Collection<UInt8>) -> String {
        var lines: [[UInt8]] = [[]]
        var previousCR = false
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "\r"):
                lines.append([])
                previousCR = true
                continue
            case UInt8(ascii: "\n"):
                if !previousCR { lines.append([]) }
            case UInt8(ascii: "\t"), 32...126, 128...255:
                lines[lines.count - 1].append(byte)
            default:
                break
            }
            previousCR = false
        }
        var first = lines.removeFirst()[...]
        while let byte = first.first, byte == 32 || byte == 9 { first = first.dropFirst() }
        var result = Array(first)
        for line in lines where line.contains(where: { $0 != 32 && $0 != 9 }) {
            result.append(contentsOf: [13, 10])
            if line[0] != 32 && line[0] != 9 { result.append(9) }
            result.append(contentsOf: line)
        }
        // A value that began with a line break leaves its first line empty: start at the text.
        if result.starts(with: [13, 10]) {
            result.removeFirst(2)
            while let byte = result.first, byte == 32 || byte == 9 { result.removeFirst() }
        }
        return String(decoding: result, as: UTF8.self)
    }
}

/// A change to a header field that is already in the message, or an addition at a position.
///
/// Positions and instances count the fields of the header section as the filter saw it.
public enum HeaderChange: Sendable, Hashable, CustomStringConvertible {
    /// Insert the field at `index` in the header section: 0 before the first field (milter's
    /// insheader, rspamd's `order`).
    case insert(FilterHeaderField, at: Int)
    /// Replace the value of the `instance`-th field with this name (1 = the first, name
    /// compared case-insensitively); when there is no such field, add it (milter's chgheader).
    case replace(FilterHeaderField, instance: Int)
    /// Delete fields with this name: `instance` 0 deletes all of them, a positive `n` the n-th
    /// from the top, a negative `-n` the n-th from the bottom (rspamd's convention; a milter
    /// names only positive instances).
    case delete(name: String, instance: Int)

    public var description: String {
        switch self {
        case .insert(let field, let index): "insert \(field.name) at \(index)"
        case .replace(let field, let instance): "replace \(field.name)[\(instance)]"
        case .delete(let name, let instance): instance == 0 ? "delete \(name)" : "delete \(name)[\(instance)]"
        }
    }
}

/// A change to the envelope a milter asked for at the end of the message (SMFIR_CHGFROM,
/// SMFIR_ADDRCPT, SMFIR_ADDRCPT_PAR, SMFIR_DELRCPT), also in rspamd's `milter` block.
/// Addresses are as the filter sent them, usually in angle brackets.
public enum EnvelopeChange: Sendable, Hashable, CustomStringConvertible {
    /// Replace the reverse-path, with ESMTP parameters when the filter gave any.
    case changeSender(String, parameters: String?)
    /// Add a recipient, with ESMTP parameters when the filter gave any.
    case addRecipient(String, parameters: String?)
    /// Remove a recipient.
    case deleteRecipient(String)

    public var description: String {
        switch self {
        case .changeSender(let address, _): "sender \(address)"
        case .addRecipient(let address, _): "add recipient \(address)"
        case .deleteRecipient(let address): "delete recipient \(address)"
        }
    }
}

/// A recipient a milter refused in its RCPT step, with the reply it gave (4xx or 5xx).
public struct RecipientRejection: Sendable, Hashable {
    public var recipient: String
    public var reply: SMTPReply

    public init(recipient: String, reply: SMTPReply) {
        self.recipient = recipient
        self.reply = reply
    }
}

/// A filter's answer about one message.
public struct FilterVerdict: Sendable, Hashable, CustomStringConvertible {
    /// The filter's `name`.
    public var filter: String
    /// The message's spam score, when the filter computes one.
    public var score: Double?
    /// The score at which the filter calls a message spam (spamd's `required`); for rspamd the
    /// score of its reject action (`required_score`).
    public var threshold: Double?
    /// The filter's own spam judgement, when it gives one.
    public var isSpam: Bool?
    /// Names of the rules that matched (SpamAssassin tests, rspamd symbols).
    public var symbols: [String]
    /// What the filter asked for.
    public var action: FilterAction
    /// Fields to append to the header section, in order.
    public var headersToAdd: [FilterHeaderField]
    /// Insertions, replacements and deletions of header fields, in the order asked.
    public var headerChanges: [HeaderChange]
    /// Changes of sender and recipients (milter, rspamd's `milter` block).
    public var envelopeChanges: [EnvelopeChange]
    /// Recipients a milter refused; the message goes on for the others. When it refused all
    /// of them, `action` is the refusal.
    public var recipientRejections: [RecipientRejection]
    /// A new body (everything after the header section's empty line), when a milter replaced it.
    public var replacementBody: ByteBuffer?
    /// Further words for the log: the filter's message, what it skipped.
    public var notes: [String]

    public init(
        filter: String, score: Double? = nil, threshold: Double? = nil, isSpam: Bool? = nil, symbols: [String] = [],
        action: FilterAction = .none, headersToAdd: [FilterHeaderField] = [], headerChanges: [HeaderChange] = [],
        envelopeChanges: [EnvelopeChange] = [], recipientRejections: [RecipientRejection] = [],
        replacementBody: ByteBuffer? = nil, notes: [String] = []
    ) {
        self.filter = filter
        self.score = score
        self.threshold = threshold
        self.isSpam = isSpam
        self.symbols = symbols
        self.action = action
        self.headersToAdd = headersToAdd
        self.headerChanges = headerChanges
        self.envelopeChanges = envelopeChanges
        self.recipientRejections = recipientRejections
        self.replacementBody = replacementBody
        self.notes = notes
    }

    /// One line for the log: `spamd: spam score=1003.3/5.0 action=none symbols=GTUBE,NO_RECEIVED`.
    public var description: String {
        var parts = ["\(filter):"]
        switch isSpam {
        case true?: parts.append("spam")
        case false?: parts.append("ham")
        case nil: break
        }
        if let score {
            parts.append("score=\(Self.format(score))" + (threshold.map { "/\(Self.format($0))" } ?? ""))
        }
        parts.append("action=\(action)")
        if !symbols.isEmpty { parts.append("symbols=\(symbols.joined(separator: ","))") }
        if !headersToAdd.isEmpty { parts.append("add=\(headersToAdd.map(\.name).joined(separator: ","))") }
        if !headerChanges.isEmpty { parts.append("change=\(headerChanges.map(\.description).joined(separator: ","))") }
        if !envelopeChanges.isEmpty {
            parts.append("envelope=\(envelopeChanges.map(\.description).joined(separator: ","))")
        }
        for rejection in recipientRejections { parts.append("rcpt \(rejection.recipient): \(rejection.reply)") }
        if let replacementBody { parts.append("body replaced (\(replacementBody.readableBytes) bytes)") }
        parts.append(contentsOf: notes)
        return parts.joined(separator: " ")
    }

    private static func format(_ value: Double) -> String {
        "\((value * 100).rounded() / 100)"
    }
}
