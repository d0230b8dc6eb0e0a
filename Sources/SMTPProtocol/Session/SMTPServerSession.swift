/// The server side of one SMTP session (RFC 5321 §4.1.4, §3.3) as a value type: every event
/// returns the action the connection driver carries out. No I/O and no clock live here, so the
/// whole dialogue is testable without a socket.
///
/// What the session cannot decide alone it asks for: the sender and each recipient go to policy
/// (`verifySender`, `verifyRecipient`) and come back as verdicts; the message goes to the queue
/// (`commit`) and comes back as `messageQueued` or `messageFailed`.
public struct SMTPServerSession: Sendable {
    /// What this listener offers; fixed for the life of the connection except `tlsActive`.
    public struct Configuration: Sendable, Hashable {
        public var hostname: String
        public var limits: SMTPLimits
        /// STARTTLS can be offered (a certificate is configured).
        public var tlsAvailable: Bool
        /// AUTH can be offered here once TLS is active (submission ports, RFC 6409).
        public var authAvailable: Bool
        /// MAIL is refused until AUTH succeeded (submission ports).
        public var authRequired: Bool
        /// The connection began with TLS (RFC 8314 implicit TLS).
        public var implicitTLS: Bool
        /// SASL mechanisms advertised after TLS, e.g. ["PLAIN", "LOGIN"].
        public var authMechanisms: [String]
        /// Failed AUTH attempts in one session before it ends with 421.
        public var authFailuresPerSession: Int

        public init(
            hostname: String, limits: SMTPLimits = SMTPLimits(), tlsAvailable: Bool = false,
            authAvailable: Bool = false, authRequired: Bool = false, implicitTLS: Bool = false,
            authMechanisms: [String] = ["PLAIN", "LOGIN"], authFailuresPerSession: Int = 3
        ) {
            self.hostname = hostname
            self.limits = limits
            self.tlsAvailable = tlsAvailable
            self.authAvailable = authAvailable
            self.authRequired = authRequired
            self.implicitTLS = implicitTLS
            self.authMechanisms = authMechanisms
            self.authFailuresPerSession = authFailuresPerSession
        }
    }

    /// A recipient the policy accepted, with the addresses it delivers to (aliases expanded).
    public struct AcceptedRecipient: Sendable, Hashable {
        public var path: ForwardPath
        public var parameters: RecipientParameters
        public var deliverTo: [String]

        public init(path: ForwardPath, parameters: RecipientParameters, deliverTo: [String]) {
            self.path = path
            self.parameters = parameters
            self.deliverTo = deliverTo
        }
    }

    /// The envelope of the transaction under way (RFC 5321 §3.3).
    public struct Transaction: Sendable, Hashable {
        public var sender: ReversePath
        public var parameters: MailParameters
        public var recipients: [AcceptedRecipient] = []
        /// Octets received so far by BDAT chunks.
        public var chunkedSize: Int = 0
    }

    public enum Action: Sendable, Hashable {
        case send(SMTPReply)
        /// Send the reply, then close the connection.
        case sendAndClose(SMTPReply)
        /// Ask policy about the sender; answer with `senderVerdict`.
        case verifySender(ReversePath, MailParameters)
        /// Ask policy about a recipient; answer with `recipientVerdict`.
        case verifyRecipient(ForwardPath, RecipientParameters)
        /// Send the 354 reply and read message content until `<CRLF>.<CRLF>`.
        case beginData(SMTPReply)
        /// Read exactly `size` octets of BDAT content (RFC 3030 §2) into the message.
        case receiveChunk(size: Int, last: Bool)
        /// Read exactly `size` octets and throw them away, then send `reply`: a BDAT that
        /// cannot be accepted still has its octets on the wire, and they must not be read as
        /// commands.
        case discardChunk(size: Int, reply: SMTPReply)
        /// Send the 220, then start the TLS handshake; everything buffered must be discarded.
        case startTLS(SMTPReply)
        /// Check these credentials; answer with `authenticationFinished`.
        case authenticate(SASLCredentials)
        /// Hand the finished message to the queue; answer with `messageQueued`/`messageFailed`.
        case commit(Transaction)
    }

    /// Where the dialogue stands.
    public enum Phase: Sendable, Hashable {
        /// Connected, greeted, no HELO/EHLO yet (also right after STARTTLS).
        case connected
        /// HELO/EHLO done, no transaction.
        case ready
        /// MAIL accepted: RCPT, DATA or BDAT may follow.
        case transaction
        /// Between `DATA` and the end of content, or between BDAT chunks of one message.
        case receivingData
        /// Waiting for the queue to take the message.
        case committing
        /// Waiting for a policy verdict.
        case verifying
        /// In an AUTH exchange: the next line is a SASL response, or the credentials are being
        /// checked.
        case authenticating
        case closed
    }

    public private(set) var configuration: Configuration
    public private(set) var phase: Phase = .connected
    public private(set) var transaction: Transaction?
    /// The name the client gave in HELO/EHLO.
    public private(set) var heloName: String?
    /// Whether the client said EHLO (ESMTP) rather than HELO.
    public private(set) var extended = false
    public private(set) var tlsActive: Bool
    public private(set) var authenticatedUser: String?
    /// Replies with a 4xx or 5xx code that count towards `limits.errorsPerSession`.
    public private(set) var errorCount = 0
    /// Messages accepted in this session.
    public private(set) var messageCount = 0
    /// Failed AUTH attempts in this session.
    public private(set) var authFailures = 0
    private var chunking = false
    /// The SASL step awaiting the client's next line; nil while the credentials are checked.
    private var sasl: SASLExchange?
    private var phaseBeforeVerify: Phase = .ready

    public init(configuration: Configuration) {
        self.configuration = configuration
        self.tlsActive = configuration.implicitTLS
    }

    // MARK: - Greeting

    /// RFC 5321 §4.2: `220 <domain> ESMTP ...`. The greeting carries no enhanced code.
    public func greeting() -> SMTPReply {
        SMTPReply(220, nil, "\(configuration.hostname) ESMTP Tern")
    }

    // MARK: - Commands

    /// A complete command line arrived. `line` is the parse result of that line.
    public mutating func receive(_ parsed: Result<SMTPCommand, SMTPCommandError>) -> Action {
        switch parsed {
        case .failure(let error):
            return fail(error.reply)
        case .success(let command):
            return receive(command)
        }
    }

    /// The line exceeded `limits.commandLineLength` (RFC 5321 §4.5.3.1.4).
    public mutating func receiveOverlongLine() -> Action {
        if awaitsSASLResponse {
            // An overlong SASL response ends the exchange (RFC 4954 §4 allows 12288 octets; a
            // PLAIN or LOGIN response never needs more than the command line limit).
            sasl = nil
            phase = .ready
        }
        return fail(SMTPReply(500, EnhancedStatusCode(5, 5, 2), "Error: line too long"))
    }

    public mutating func receive(_ command: SMTPCommand) -> Action {
        precondition(
            phase != .verifying && phase != .committing && phase != .authenticating, "driver must wait for the verdict")
        switch command {
        case .helo(let domain): return hello(domain, extended: false)
        case .ehlo(let domain): return hello(domain, extended: true)
        case .mail(let sender, let parameters): return mail(sender, parameters)
        case .rcpt(let recipient, let parameters): return rcpt(recipient, parameters)
        case .data: return data()
        case .bdat(let size, let last): return bdat(size: size, last: last)
        case .rset:
            transaction = nil
            chunking = false
            if phase != .connected { phase = .ready }
            return ok("Ok")
        case .noop:
            return ok("Ok")
        case .quit:
            phase = .closed
            return .sendAndClose(SMTPReply(221, EnhancedStatusCode(2, 0, 0), "Bye"))
        case .vrfy:
            // RFC 5321 §3.5.3: 252 when the server will not verify; never reveal users.
            return .send(
                SMTPReply(
                    252, EnhancedStatusCode(2, 0, 0), "Cannot VRFY user, but will accept message and attempt delivery"))
        case .expn:
            return fail(SMTPReply(502, EnhancedStatusCode(5, 5, 1), "Error: EXPN not supported"))
        case .help:
            return .send(
                SMTPReply(
                    214, EnhancedStatusCode(2, 0, 0),
                    "See RFC 5321; commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH"))
        case .starttls:
            return startTLS()
        case .auth(let mechanism, let initialResponse):
            return auth(mechanism: mechanism, initialResponse: initialResponse)
        }
    }

    private mutating func hello(_ domain: String, extended: Bool) -> Action {
        // RFC 5321 §4.1.4: EHLO/HELO resets any transaction.
        transaction = nil
        chunking = false
        heloName = domain
        self.extended = extended
        phase = .ready
        guard extended else {
            return .send(SMTPReply(250, nil, configuration.hostname))
        }
        var lines = ["\(configuration.hostname)"]
        lines.append("PIPELINING")
        lines.append("SIZE \(configuration.limits.messageSize)")
        lines.append("8BITMIME")
        lines.append("ENHANCEDSTATUSCODES")
        lines.append("SMTPUTF8")
        lines.append("CHUNKING")
        lines.append("DSN")
        if configuration.tlsAvailable && !tlsActive { lines.append("STARTTLS") }
        if tlsActive { lines.append("REQUIRETLS") }
        if authOffered { lines.append("AUTH " + configuration.authMechanisms.joined(separator: " ")) }
        // RFC 2034: the EHLO response carries no enhanced status codes.
        return .send(SMTPReply(250, nil, lines: lines))
    }

    /// AUTH is offered only under TLS and only where the listener allows it (RFC 4954 §4).
    private var authOffered: Bool {
        configuration.authAvailable && tlsActive && authenticatedUser == nil
    }

    private mutating func mail(_ sender: ReversePath, _ parameters: MailParameters) -> Action {
        switch phase {
        case .connected:
            return fail(SMTPReply(503, EnhancedStatusCode(5, 5, 1), "Error: send HELO/EHLO first"))
        case .transaction, .receivingData:
            return fail(SMTPReply(503, EnhancedStatusCode(5, 5, 1), "Error: nested MAIL command"))
        default:
            break
        }
        if configuration.authRequired && authenticatedUser == nil {
            // RFC 3207 §4: name the missing step when it is TLS.
            let text = tlsActive ? "Authentication required" : "Must issue a STARTTLS command first"
            return fail(SMTPReply(530, EnhancedStatusCode(5, 7, 0), text))
        }
        // RFC 1870 §6.2: a declared size over the limit is refused at once.
        if let size = parameters.size, size > configuration.limits.messageSize {
            return fail(SMTPReply(552, EnhancedStatusCode(5, 3, 4), "Message size exceeds fixed limit"))
        }
        if parameters.body == .binaryMIME {
            return fail(SMTPReply(555, EnhancedStatusCode(5, 5, 4), "Unsupported parameter: BODY=BINARYMIME"))
        }
        if !extended && parameters != MailParameters() {
            // RFC 1869 §6: parameters need EHLO.
            return fail(SMTPReply(555, EnhancedStatusCode(5, 5, 4), "Parameters need EHLO"))
        }
        // RFC 8689 §2: REQUIRETLS is offered, and so may be used, only under TLS.
        if parameters.requireTLS && !tlsActive {
            return fail(SMTPReply(555, EnhancedStatusCode(5, 5, 4), "REQUIRETLS needs TLS: say STARTTLS first"))
        }
        // RFC 6531 §3.6.5: a non-ASCII address without SMTPUTF8.
        if let mailbox = sender.mailbox, mailbox.requiresSMTPUTF8, !parameters.smtpUTF8 {
            return fail(SMTPReply(553, EnhancedStatusCode(5, 6, 7), "Non-ASCII sender address needs SMTPUTF8"))
        }
        phaseBeforeVerify = phase
        phase = .verifying
        transaction = Transaction(sender: sender, parameters: parameters)
        return .verifySender(sender, parameters)
    }

    /// Policy's answer to `verifySender`: nil accepts, a reply refuses.
    public mutating func senderVerdict(_ refusal: SMTPReply?) -> Action {
        precondition(phase == .verifying)
        if let refusal {
            transaction = nil
            phase = phaseBeforeVerify
            return fail(refusal)
        }
        phase = .transaction
        return ok("Ok", EnhancedStatusCode(2, 1, 0))
    }

    private mutating func rcpt(_ recipient: ForwardPath, _ parameters: RecipientParameters) -> Action {
        guard phase == .transaction, let transaction, !chunking else {
            if phase == .receivingData {
                return fail(SMTPReply(503, EnhancedStatusCode(5, 5, 1), "Error: RCPT during BDAT"))
            }
            return fail(SMTPReply(503, EnhancedStatusCode(5, 5, 1), "Error: need MAIL command"))
        }
        if transaction.recipients.count >= configuration.limits.recipients {
            return fail(SMTPReply(452, EnhancedStatusCode(4, 5, 3), "Error: too many recipients"))
        }
        if !extended && parameters != RecipientParameters() {
            return fail(SMTPReply(555, EnhancedStatusCode(5, 5, 4), "Parameters need EHLO"))
        }
        if case .mailbox(let mailbox) = recipient, mailbox.requiresSMTPUTF8, !transaction.parameters.smtpUTF8 {
            return fail(SMTPReply(553, EnhancedStatusCode(5, 6, 7), "Non-ASCII recipient address needs SMTPUTF8"))
        }
        phaseBeforeVerify = phase
        phase = .verifying
        return .verifyRecipient(recipient, parameters)
    }

    /// Policy's answer to `verifyRecipient`: `.success(targets)` accepts the recipient for
    /// delivery to `targets`, `.failure(reply)` refuses this recipient only.
    public mutating func recipientVerdict(
        _ recipient: ForwardPath, _ parameters: RecipientParameters, _ verdict: Result<[String], RecipientRefusal>
    ) -> Action {
        precondition(phase == .verifying)
        phase = .transaction
        switch verdict {
        case .failure(let refusal):
            return fail(refusal.reply)
        case .success(let targets):
            transaction?.recipients.append(
                AcceptedRecipient(path: recipient, parameters: parameters, deliverTo: targets))
            return ok("Ok", EnhancedStatusCode(2, 1, 5))
        }
    }

    private mutating func data() -> Action {
        switch phase {
        case .connected, .ready:
            return fail(SMTPReply(503, EnhancedStatusCode(5, 5, 1), "Error: need MAIL command"))
        case .receivingData:
            return fail(SMTPReply(503, EnhancedStatusCode(5, 5, 1), "Error: DATA during BDAT"))
        default:
            break
        }
        guard let transaction, !transaction.recipients.isEmpty else {
            // Postfix says the same: with pipelining, every RCPT may have been refused.
            return fail(SMTPReply(554, EnhancedStatusCode(5, 5, 1), "Error: no valid recipients"))
        }
        phase = .receivingData
        return .beginData(SMTPReply(354, nil, "End data with <CR><LF>.<CR><LF>"))
    }

    private mutating func bdat(size: Int, last: Bool) -> Action {
        guard phase == .transaction || (phase == .receivingData && chunking), let transaction else {
            let reason = phase == .receivingData ? "Error: BDAT during DATA" : "Error: need MAIL command"
            return discard(size, SMTPReply(503, EnhancedStatusCode(5, 5, 1), reason))
        }
        guard !transaction.recipients.isEmpty else {
            return discard(size, SMTPReply(554, EnhancedStatusCode(5, 5, 1), "Error: no valid recipients"))
        }
        chunking = true
        phase = .receivingData
        return .receiveChunk(size: size, last: last)
    }

    /// A BDAT chunk has been read in full. `accepted` says whether the message so far is still
    /// acceptable (the driver checks size and content); nil accepts, a reply refuses the whole
    /// message and ends the transaction.
    public mutating func chunkReceived(size: Int, last: Bool, refusal: SMTPReply?) -> Action {
        precondition(phase == .receivingData && chunking)
        if let refusal {
            transaction = nil
            chunking = false
            phase = .ready
            return fail(refusal)
        }
        transaction?.chunkedSize += size
        guard last else {
            return ok("\(size) octets received", EnhancedStatusCode(2, 0, 0))
        }
        phase = .committing
        return .commit(transaction!)
    }

    /// DATA content ended at `<CRLF>.<CRLF>`; `refusal` is the driver's verdict on the content
    /// (size, line endings, header limits, policy).
    public mutating func dataReceived(refusal: SMTPReply?) -> Action {
        precondition(phase == .receivingData && !chunking)
        if let refusal {
            transaction = nil
            phase = .ready
            return fail(refusal)
        }
        phase = .committing
        return .commit(transaction!)
    }

    /// The queue has the message on stable storage (RFC 5321 §6.1: only now may we say 250).
    public mutating func messageQueued(id: String) -> Action {
        precondition(phase == .committing)
        endTransaction()
        messageCount += 1
        return ok("Ok: queued as \(id)", EnhancedStatusCode(2, 0, 0))
    }

    /// The queue could not store the message; `reply` is a 4xx so the client keeps it.
    public mutating func messageFailed(_ reply: SMTPReply) -> Action {
        precondition(phase == .committing)
        endTransaction()
        return fail(reply)
    }

    private mutating func endTransaction() {
        transaction = nil
        chunking = false
        phase = .ready
    }

    private mutating func startTLS() -> Action {
        guard configuration.tlsAvailable else {
            return fail(SMTPReply(502, EnhancedStatusCode(5, 5, 1), "Error: command not implemented"))
        }
        guard !tlsActive else {
            return fail(SMTPReply(503, EnhancedStatusCode(5, 5, 1), "Error: TLS already active"))
        }
        guard phase == .connected || phase == .ready else {
            return fail(SMTPReply(503, EnhancedStatusCode(5, 5, 1), "Error: STARTTLS during a transaction"))
        }
        return .startTLS(SMTPReply(220, EnhancedStatusCode(2, 0, 0), "Ready to start TLS"))
    }

    /// The TLS handshake finished: RFC 3207 §4.2, the client must start again with EHLO and the
    /// server forgets everything it learned before.
    public mutating func tlsStarted() {
        tlsActive = true
        heloName = nil
        extended = false
        transaction = nil
        chunking = false
        phase = .connected
    }

    // MARK: - AUTH (RFC 4954)

    /// The driver must hand the next input line to `receiveSASLResponse`, not parse it as a
    /// command.
    public var awaitsSASLResponse: Bool { phase == .authenticating && sasl != nil }

    private mutating func auth(mechanism: String, initialResponse: String?) -> Action {
        guard authOffered else {
            if authenticatedUser != nil {
                return fail(SMTPReply(503, EnhancedStatusCode(5, 5, 1), "Error: already authenticated"))
            }
            return fail(SMTPReply(503, EnhancedStatusCode(5, 5, 1), "Error: authentication not enabled"))
        }
        guard phase == .ready, extended else {
            if phase == .connected || !extended {
                return fail(SMTPReply(503, EnhancedStatusCode(5, 5, 1), "Error: send EHLO first"))
            }
            return fail(SMTPReply(503, EnhancedStatusCode(5, 5, 1), "Error: MAIL transaction in progress"))
        }
        guard configuration.authMechanisms.contains(mechanism),
            let step = SASLExchange.begin(mechanism: mechanism, initialResponse: initialResponse)
        else {
            return fail(SMTPReply(504, EnhancedStatusCode(5, 5, 4), "Unrecognized authentication type"))
        }
        phase = .authenticating
        return advance(step)
    }

    /// The client's answer to a 334 challenge: base64, or `*` to cancel (RFC 4954 §4).
    public mutating func receiveSASLResponse(_ line: String) -> Action {
        precondition(awaitsSASLResponse)
        guard let exchange = sasl else { preconditionFailure() }
        sasl = nil
        if line == "*" {
            phase = .ready
            return fail(SMTPReply(501, EnhancedStatusCode(5, 0, 0), "Authentication cancelled"))
        }
        return advance(exchange.respond(line))
    }

    private mutating func advance(_ step: SASLExchange.Step) -> Action {
        switch step {
        case .challenge(let text, let next):
            sasl = next
            return .send(SMTPReply(334, nil, text))
        case .malformed:
            phase = .ready
            return fail(SMTPReply(501, EnhancedStatusCode(5, 5, 2), "Cannot decode response"))
        case .done(let credentials):
            sasl = nil
            return .authenticate(credentials)
        }
    }

    /// The driver checked the credentials of `.authenticate`.
    public mutating func authenticationFinished(_ result: AuthenticationResult) -> Action {
        precondition(phase == .authenticating && sasl == nil)
        phase = .ready
        switch result {
        case .success(let user):
            authenticatedUser = user
            return .send(SMTPReply(235, EnhancedStatusCode(2, 7, 0), "Authentication successful"))
        case .invalid:
            authFailures += 1
            if authFailures >= configuration.authFailuresPerSession { return tooManyAuthFailures() }
            return fail(SMTPReply(535, EnhancedStatusCode(5, 7, 8), "Authentication credentials invalid"))
        case .temporaryFailure:
            return fail(SMTPReply(454, EnhancedStatusCode(4, 7, 0), "Temporary authentication failure"))
        case .blocked:
            return tooManyAuthFailures()
        }
    }

    private mutating func tooManyAuthFailures() -> Action {
        errorCount += 1
        phase = .closed
        return .sendAndClose(
            SMTPReply(
                421, EnhancedStatusCode(4, 7, 0), "\(configuration.hostname) Error: too many authentication failures"))
    }

    // MARK: - Timeouts and shutdown

    /// The client was silent for too long (RFC 5321 §4.5.3.2.7).
    public mutating func timedOut() -> Action {
        phase = .closed
        return .sendAndClose(
            SMTPReply(421, EnhancedStatusCode(4, 4, 2), "\(configuration.hostname) Error: timeout exceeded"))
    }

    /// The server is shutting down (SPEC §1.1).
    public mutating func shuttingDown() -> Action {
        phase = .closed
        return .sendAndClose(
            SMTPReply(421, EnhancedStatusCode(4, 3, 2), "\(configuration.hostname) Service shutting down"))
    }

    // MARK: - Replies

    private func ok(_ text: String, _ code: EnhancedStatusCode = EnhancedStatusCode(2, 0, 0)) -> Action {
        .send(SMTPReply(250, code, text))
    }

    private mutating func discard(_ size: Int, _ reply: SMTPReply) -> Action {
        errorCount += 1
        return .discardChunk(size: size, reply: reply)
    }

    /// A failure reply; after too many the session ends (Postfix's smtpd_hard_error_limit), so
    /// that a client cannot probe or flood forever.
    private mutating func fail(_ reply: SMTPReply) -> Action {
        errorCount += 1
        if errorCount >= configuration.limits.errorsPerSession {
            phase = .closed
            return .sendAndClose(
                SMTPReply(421, EnhancedStatusCode(4, 7, 0), "\(configuration.hostname) Error: too many errors"))
        }
        return .send(reply)
    }
}

/// Why a recipient was refused, as policy says it; the reply goes to the client as is.
public struct RecipientRefusal: Error, Sendable, Hashable {
    public var reply: SMTPReply
    public init(_ reply: SMTPReply) { self.reply = reply }
}
