import DNSClient
import Foundation
import Logging
import MailMessage
import MailPolicy
import SMTPServer

/// The end-of-content checks: DKIM, DMARC and the content filters, with their results as
/// `Authentication-Results:` entries (RFC 8601) and as facts for the session policy.
struct ContentChecks: Sendable {
    /// SPF's result goes into `Authentication-Results:`.
    var spf = false
    var dmarc: DMARCEvaluator?
    var logger: Logger

    /// Whether there is anything to do at the end of the content.
    var isActive: Bool { spf || dmarc != nil }

    func run(_ input: ContentCheckInput) async -> ContentFacts {
        var facts = ContentFacts()
        guard input.inbound else { return facts }
        if let spf = input.spf {
            facts.authenticationResults.append(
                AuthenticationResults.MethodResult(
                    method: "spf", result: spf.result, properties: [.smtp(spf.property, spf.value)]))
        }
        let dkimPassing: [String] = []
        if let dmarc {
            let fromValues = input.header.filter { $0.name.lowercased() == "from" }.map(\.value)
            switch DMARCEvaluator.authorDomain(fromFieldValues: fromValues) {
            case .success(let from):
                let spf = input.spf.flatMap { spf in SPFResult(rawValue: spf.result).map { (domain: spf.domain, result: $0) } }
                let verdict = await dmarc.evaluate(
                    fromDomain: from, spf: spf, dkimPassingDomains: dkimPassing, sample: Int.random(in: 0..<100))
                facts.dmarc = SessionPolicy.DMARCOutcome(
                    result: verdict.result.rawValue, requested: Self.requested(verdict), domain: verdict.fromDomain)
                var properties: [AuthenticationResults.Property] = [.header("from", from)]
                if let policy = verdict.requestedPolicy { properties.append(.policy("dmarc", policy.rawValue)) }
                facts.authenticationResults.append(
                    AuthenticationResults.MethodResult(
                        method: "dmarc", result: verdict.result.rawValue,
                        comment: verdict.result == .fail ? "p=\(verdict.requestedPolicy?.rawValue ?? "none") dis=\(verdict.disposition.rawValue)" : nil,
                        properties: properties))
            case .failure(let error):
                // RFC 7489 §6.6.1: no single author domain, no DMARC evaluation; recorded
                // as permerror and left to rules (`dmarc = "permerror"`).
                facts.dmarc = SessionPolicy.DMARCOutcome(result: "permerror", requested: .none, domain: "")
                facts.authenticationResults.append(
                    AuthenticationResults.MethodResult(method: "dmarc", result: "permerror", reason: "\(error)"))
            }
        }
        return facts
    }

    /// What the policy asks for after `pct` (RFC 7489 §6.6.4): the verdict's disposition.
    static func requested(_ verdict: DMARCVerdict) -> SessionPolicy.DMARCOutcome.Requested {
        guard verdict.result == .fail else { return .none }
        switch verdict.disposition {
        case .reject: return .reject
        case .quarantine: return .quarantine
        case .none: return .none
        }
    }
}
