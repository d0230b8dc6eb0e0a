import Logging
import MailMessage
import MailPolicy
import MailQueue
import NIOCore
import SMTPProtocol

/// The anti-spam and sender-authentication stages of a session (SPEC §2.6): the lookups run
/// off the event loop while input waits, `SessionPolicy` decides on the loop, and the verdicts
/// become replies, header fields and queue dispositions.
extension SMTPSessionHandler {
    /// Checks that judge mail from outside: everything but the rules is skipped for trusted
    /// networks and authenticated clients (their mail is the server's own).
    var isInbound: Bool { !client.isTrusted && client.authenticatedUser == nil }

    /// Connect: the per-client connection rate, and the DNS lists start now so that their
    /// answer is usually in by MAIL FROM. Returns false when the connection was refused.
    func startConnectionChecks(context: ChannelHandlerContext) -> Bool {
        guard let checks = server.checks, !client.isTrusted, let address = clientAddress else { return true }
        if let admit = checks.admitConnection, !admit(address) {
            logger.warning("connection rate exceeded", metadata: ["event": "reject", "reason": "connection_rate"])
            send(
                SMTPReply(
                    421, EnhancedStatusCode(4, 7, 0),
                    "\(server.settings.hostname) Error: too many connections from your address; try again later"))
            close()
            return false
        }
        if let lookup = checks.dnsLists {
            let promise = context.eventLoop.makePromise(of: DNSListFacts.self)
            Task { promise.succeed(await lookup(address)) }
            dnsListLookup = promise.futureResult
        }
        return true
    }

    /// Runs `work` off the event loop while input waits, then `then` on the loop.
    private func runChecks<T: Sendable>(
        _ work: @escaping @Sendable () async -> T, then: @escaping (SMTPSessionHandler, T) -> Void
    ) {
        guard let context else { return }
        wait()
        checking = true
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let next = NIOLoopBound(then, eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        Task {
            let result = await work()
            eventLoop.execute {
                let handler = loopBound.value
                handler.checking = false
                guard case .waiting = handler.mode else { return }  // the client went away meanwhile
                handler.mode = .command
                next.value(handler, result)
                if handler.shutdownRequested, !handler.commitInFlight, !handler.checking {
                    handler.shutDown()
                    return
                }
                if case .waiting = handler.mode { return }
                handler.readAgain()
            }
        }
    }

    // MARK: MAIL FROM

    private struct SenderFacts: Sendable {
        var lists: DNSListFacts?
        var reverseName: String?
        var heloFindings: Set<String>?
        var spf: SPFFacts?
    }

    /// MAIL FROM passed the sender policy: the DNS lists, HELO checks and SPF, then the
    /// session policy's verdict. Returns the action at once when nothing needs a lookup.
    func checkSender(_ sender: ReversePath) -> SMTPServerSession.Action? {
        guard let checks = server.checks else { return session.senderVerdict(nil) }
        let inbound = isInbound
        let needsLookups =
            inbound && (checks.dnsLists != nil || checks.heloFindings != nil || checks.spf != nil)
            || (!policyConnected && reverseName == nil && clientAddress != nil)
        guard needsLookups else {
            return senderChecked(sender, SenderFacts(reverseName: reverseName ?? nil))
        }
        let lists = inbound ? dnsListLookup : nil
        let name = reverseNameLookup
        let client = clientAddress
        let helo = session.heloName ?? ""
        runChecks({
            var facts = SenderFacts()
            facts.lists = try? await lists?.get()
            facts.reverseName = (try? await name?.get()) ?? nil
            if inbound, !helo.isEmpty { facts.heloFindings = await checks.heloFindings?(helo, client) }
            if inbound, let client { facts.spf = await checks.spf?(client, sender.description, helo) }
            return facts
        }) { handler, facts in
            handler.perform(handler.senderChecked(sender, facts))
        }
        return nil
    }

    private func senderChecked(_ sender: ReversePath, _ facts: SenderFacts) -> SMTPServerSession.Action {
        guard var policy else { return session.senderVerdict(nil) }
        if !policyConnected {
            policyConnected = true
            let lists = facts.lists ?? DNSListFacts()
            if !lists.listedZones.isEmpty {
                logger.info(
                    "client listed",
                    metadata: [
                        "event": "dnsbl", "zones": "\(lists.detail.joined(separator: ","))",
                        "score": "\(SessionPolicy.format(lists.score))",
                    ])
            }
            policy.connected(
                client: client.address, clientName: facts.reverseName, listedZones: lists.listedZones,
                listScore: lists.score, authenticated: client.authenticatedUser != nil)
        }
        if let helo = session.heloName, helo != policyHELO {
            policyHELO = helo
            let findings = facts.heloFindings ?? []
            if !findings.isEmpty {
                logger.info(
                    "helo findings",
                    metadata: [
                        "event": "helo_check", "helo": "\(helo)",
                        "findings": "\(findings.sorted().joined(separator: ","))",
                    ])
            }
            policy.helo(helo, findings: findings)
        }
        spfFacts = facts.spf
        if let spf = facts.spf {
            logger.info(
                "spf",
                metadata: ["event": "spf", "result": "\(spf.result)", "identity": "\(spf.property)=\(spf.value)"])
        }
        var refusal = policy.mail(
            sender: sender.description, spf: facts.spf?.result, spfExplanation: facts.spf?.explanation)
        logRules(policy)
        if refusal == nil, isInbound, !policy.isAccepted, let address = clientAddress,
            let admit = server.checks?.admitMessage, !admit(address)
        {
            refusal = (
                SMTPReply(450, EnhancedStatusCode(4, 7, 1), "Too many messages from your address; try again later"),
                "message_rate"
            )
        }
        self.policy = policy
        if let refusal {
            logger.info(
                "sender refused",
                metadata: [
                    "event": "reject", "from": "<\(sender)>", "reason": "\(refusal.reason)",
                    "reply": "\(refusal.reply)",
                ])
        }
        return session.senderVerdict(refusal?.reply)
    }

    private func logRules(_ policy: SessionPolicy) {
        guard !policy.matchedRules.isEmpty else { return }
        logger.info(
            "rules matched", metadata: ["event": "rule", "rules": "\(policy.matchedRules.joined(separator: ","))"])
    }

    // MARK: RCPT TO

    /// A recipient the recipient policy accepted: the session policy (delayed refusals, rules,
    /// the score), the recipient rate and greylisting. Nil lets it pass.
    func checkRecipient(_ recipient: ForwardPath) -> (reply: SMTPReply, reason: String)? {
        guard var policy, let checks = server.checks else { return nil }
        defer { self.policy = policy }
        if let refusal = policy.recipient("\(recipient)") { return refusal }
        guard isInbound, !policy.isAccepted, let address = clientAddress else { return nil }
        if let admit = checks.admitRecipient, !admit(address) {
            return (
                SMTPReply(450, EnhancedStatusCode(4, 7, 1), "Too many recipients from your address; try again later"),
                "recipient_rate"
            )
        }
        if let greylist = checks.greylist, let transaction = session.transaction,
            case .refuse(let reply) = greylist(address, transaction.sender.description, "\(recipient)")
        {
            return (reply, "greylisted")
        }
        return nil
    }

    // MARK: End of content

    private struct ContentOutcome: Sendable {
        var policy: SessionPolicy
        var facts: ContentFacts
        var decision: SessionPolicy.ContentDecision
        /// The header could not be rewritten (a storage error).
        var failure: (any Error)?
    }

    /// The content is complete: DKIM, DMARC and the filters, the policy's decision, and the
    /// header written anew; then the commit, the refusal or the discard.
    func checkContent(_ transaction: SMTPServerSession.Transaction) {
        guard var policy, let checks = server.checks, let message = incoming, let id = queueID else {
            commit(transaction)
            return
        }
        // A rule on `recipient` at the content stage sees them all.
        policy.recipientsAccepted(transaction.recipients.map { "\($0.path)" })
        let spool = message.spool
        // The filters judge mail from outside only; everything else needs just the header
        // section (with room for our own trace fields above it).
        let filterMaxSize = isInbound ? checks.filterMaxSize : 0
        let readLimit = max(filterMaxSize, server.settings.limits.headerSize + 16_384)
        let hostname = server.settings.hostname
        let template = ContentCheckInput(
            message: nil, header: [], observer: message.observer, spf: spfFacts, client: clientAddress,
            clientName: reverseName ?? nil, helo: session.heloName, sender: transaction.sender.description,
            recipients: transaction.recipients.flatMap(\.deliverTo), authenticatedUser: client.authenticatedUser,
            queueID: "\(id)", inbound: isInbound)
        let startingPolicy = policy
        runChecks({
            var input = template
            var policy = startingPolicy
            let bytes: ByteBuffer
            do {
                bytes = try spool.prefix(readLimit)
            } catch {
                return ContentOutcome(
                    policy: policy, facts: ContentFacts(), decision: .accept(.deliver, tags: [], subjectPrefix: nil),
                    failure: error)
            }
            let section = HeaderSection(parsing: bytes, isWholeMessage: spool.byteCount <= readLimit)
            input.header = section?.namesAndValues ?? []
            input.message = spool.byteCount <= filterMaxSize ? bytes : nil
            let facts = await checks.content?(input) ?? ContentFacts()
            let decision = policy.content(
                header: input.header, dkim: facts.dkim, dmarc: facts.dmarc, filters: facts.filters)
            guard case .accept(let disposition, let tags, let prefix) = decision else {
                return ContentOutcome(policy: policy, facts: facts, decision: decision)
            }
            if case .discard = disposition { return ContentOutcome(policy: policy, facts: facts, decision: decision) }
            var added: [String] = []
            if let signature = facts.signature { added.append(signature) }
            if !facts.authenticationResults.isEmpty {
                let field = AuthenticationResults(authservID: hostname, results: facts.authenticationResults).field
                added.append(field.withoutFinalCRLF)
            }
            if let receivedSPF = input.spf?.receivedSPF { added.append(receivedSPF) }
            added += facts.filterFields
            added += tags
            do {
                if let section {
                    let forged = section.fields.contains { Self.claimsOurChecks($0, hostname: hostname) }
                    if !added.isEmpty || prefix != nil || forged {
                        let header = section.rewritten(
                            adding: added, subjectPrefix: prefix,
                            keeping: { !Self.claimsOurChecks($0, hostname: hostname) }, from: bytes)
                        try spool.replacePrefix(length: section.length, with: header)
                    }
                } else if !added.isEmpty {
                    try spool.replacePrefix(length: 0, with: ByteBuffer(string: added.map { $0 + "\r\n" }.joined()))
                }
            } catch {
                return ContentOutcome(policy: policy, facts: facts, decision: decision, failure: error)
            }
            return ContentOutcome(policy: policy, facts: facts, decision: decision)
        }) { handler, outcome in
            handler.contentChecked(transaction, outcome, id: id)
        }
    }

    private func contentChecked(_ transaction: SMTPServerSession.Transaction, _ outcome: ContentOutcome, id: QueueID) {
        policy = outcome.policy
        logRules(outcome.policy)
        var metadata: Logger.Metadata = ["event": "content_checks"]
        if let dkim = outcome.facts.dkim { metadata["dkim"] = "\(dkim)" }
        if let dmarc = outcome.facts.dmarc { metadata["dmarc"] = "\(dmarc.result)" }
        if !outcome.facts.filters.isEmpty {
            metadata["score"] = "\(SessionPolicy.format(outcome.policy.facts.score))"
            metadata["filters"] =
                "\(outcome.facts.filters.map { "\($0.name)=\($0.score.map(SessionPolicy.format) ?? "-")" }.joined(separator: ","))"
        }
        if metadata.count > 1 { logger.info("content checked", metadata: metadata) }
        if let failure = outcome.failure {
            logger.error(
                "header rewrite failed", metadata: ["event": "reject", "error": "\(failure)", "reply": "452 4.3.1"])
            discardIncoming()
            perform(session.messageFailed(SMTPReply(452, EnhancedStatusCode(4, 3, 1), "Insufficient system storage")))
            return
        }
        switch outcome.decision {
        case .refuse(let reply, let reason):
            logger.info("message refused", metadata: ["event": "reject", "reason": "\(reason)", "reply": "\(reply)"])
            discardIncoming()
            perform(session.messageFailed(reply))
        case .accept(.discard(let reason), _, _):
            // Postfix's DISCARD: the client hears success, nothing is delivered.
            logger.info(
                "message discarded",
                metadata: ["event": "discard", "reason": "\(reason)", "from": "<\(transaction.sender)>"])
            discardIncoming()
            queueID = nil
            perform(session.messageQueued(id: "\(id)"))
        case .accept(.quarantine(let reason), _, _):
            logger.info("message quarantined", metadata: ["event": "quarantine", "reason": "\(reason)"])
            commit(transaction, held: true)
        case .accept(.redirect(let target), _, _):
            logger.info("message redirected", metadata: ["event": "redirect", "to": "<\(target)>"])
            commit(transaction, redirectTo: target)
        case .accept(.deliver, _, _):
            commit(transaction)
        }
    }

    /// RFC 8601 §5: an `Authentication-Results:` field from outside that names our authserv-id
    /// claims checks we never made; it is removed.
    static func claimsOurChecks(_ field: HeaderSection.Field, hostname: String) -> Bool {
        guard field.hasName("Authentication-Results") else { return false }
        return AuthenticationResults.authservID(ofFieldValue: field.unfoldedValue)?.lowercased()
            == hostname.lowercased()
    }
}

extension String {
    /// A header field as the builders write it, without its final CRLF (a single Character in
    /// Swift, so `dropLast(2)` would take a letter too).
    public var withoutFinalCRLF: String {
        hasSuffix("\r\n") ? String(dropLast()) : self
    }
}
