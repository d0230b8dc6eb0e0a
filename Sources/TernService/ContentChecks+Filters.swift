import Logging
import MailPolicy
import NIOCore
import SMTPProtocol
import SMTPServer

/// The content filters (spamd, rspamd, a milter) at the end of DATA, all at once.
extension ContentChecks {
    func runFilters(_ input: ContentCheckInput, into facts: inout ContentFacts) async {
        guard !filters.isEmpty else { return }
        guard let message = input.message else {
            logger.info(
                "message too large for the filters",
                metadata: ["event": "filter_skipped", "queue_id": "\(input.queueID)"])
            return
        }
        let envelope = FilterEnvelope(
            clientAddress: input.client.flatMap { IPAddress($0) }, clientName: input.clientName, helo: input.helo,
            authenticatedUser: input.authenticatedUser, sender: input.sender, recipients: input.recipients,
            queueID: input.queueID, hostname: hostname)
        let filters = self.filters
        let outcomes = await withTaskGroup(of: (Int, Result<FilterVerdict, FilterError>).self) { group in
            for (index, filter) in filters.enumerated() {
                group.addTask {
                    do throws(FilterError) {
                        return (index, .success(try await filter.check(message, envelope: envelope)))
                    } catch {
                        return (index, .failure(error))
                    }
                }
            }
            var outcomes: [(Int, Result<FilterVerdict, FilterError>)] = []
            for await outcome in group { outcomes.append(outcome) }
            return outcomes.sorted { $0.0 < $1.0 }.map(\.1)
        }
        for (filter, outcome) in zip(filters, outcomes) {
            switch outcome {
            case .success(let verdict):
                logger.info(
                    "filter verdict",
                    metadata: ["event": "filter", "queue_id": "\(input.queueID)", "verdict": "\(verdict)"])
                facts.filters.append(
                    SessionPolicy.FilterResult(
                        name: verdict.filter, score: verdict.score, isSpam: verdict.isSpam ?? false,
                        request: Self.request(verdict.action)))
                facts.filterFields += verdict.headersToAdd.map { "\($0.name): \($0.value)" }
                if verdict.headersToAdd.isEmpty, let score = verdict.score, filter is SpamdFilter {
                    // SpamAssassin's own header, as spamc would have written it.
                    let required = verdict.threshold.map { " required=\(SessionPolicy.format($0))" } ?? ""
                    let tests = verdict.symbols.isEmpty ? "" : " tests=\(verdict.symbols.joined(separator: ","))"
                    facts.filterFields.append(
                        "X-Spam-Status: \(verdict.isSpam == true ? "Yes" : "No"), score=\(SessionPolicy.format(score))\(required)\(tests)"
                    )
                }
                if !verdict.headerChanges.isEmpty || !verdict.envelopeChanges.isEmpty
                    || !verdict.recipientRejections.isEmpty || verdict.replacementBody != nil
                {
                    // Tern adds fields and takes verdicts; it does not let a filter rewrite the
                    // message or its envelope.
                    logger.warning(
                        "filter changes not applied",
                        metadata: ["event": "filter", "queue_id": "\(input.queueID)", "filter": "\(verdict.filter)"])
                }
            case .failure(let error):
                logger.warning(
                    "filter failed",
                    metadata: [
                        "event": "filter_error", "queue_id": "\(input.queueID)", "filter": "\(filter.name)",
                        "error": "\(error)", "action": "\(filterFailure.rawValue)",
                    ])
                if filterFailure == .defer {
                    facts.filters.append(
                        SessionPolicy.FilterResult(
                            name: filter.name, score: nil, isSpam: false,
                            request: .defer(
                                SMTPReply(
                                    451, EnhancedStatusCode(4, 7, 1), "Content filter unavailable; try again later"))))
                }
            }
        }
    }

    static func request(_ action: FilterAction) -> SessionPolicy.FilterResult.Request {
        switch action {
        case .none, .accept: .none
        case .reject(let reply): .reject(reply)
        case .tempfail(let reply): .defer(reply)
        case .discard: .discard
        case .quarantine(let reason): .quarantine(reason)
        }
    }
}
