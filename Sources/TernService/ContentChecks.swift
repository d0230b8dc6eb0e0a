import DNSClient
import Foundation
import Logging
import MailMessage
import MailPolicy
import NIOCore
import SMTPServer

/// A key of `[[dkim]]`, loaded.
struct DKIMSigningIdentity: Sendable {
    var domain: String
    var selector: String
    var key: DKIMKey
}

/// Sees one message's content as it streams in: a DKIM verifier for mail from outside, one
/// signer per `[[dkim]]` key for the server's own users (the `From:` domain, known only once
/// the header is read, picks the signer at the end).
///
/// Used by one session at a time: the event loop feeds it, then the end-of-content task reads
/// it, never both at once.
final class DKIMObserver: ContentObserver, @unchecked Sendable {
    let verifier: DKIMVerifier?
    let signers: [(identity: DKIMSigningIdentity, signer: DKIMSigner)]

    init(verifier: DKIMVerifier?, signers: [(identity: DKIMSigningIdentity, signer: DKIMSigner)]) {
        self.verifier = verifier
        self.signers = signers
    }

    func observe(_ content: ByteBuffer) {
        verifier?.append(content)
        for (_, signer) in signers { signer.append(content) }
    }
}

/// The end-of-content checks: DKIM, DMARC and the content filters, with their results as
/// `Authentication-Results:` entries (RFC 8601) and as facts for the session policy.
struct ContentChecks: Sendable {
    /// SPF's result goes into `Authentication-Results:`.
    var spf = false
    var dmarc: DMARCEvaluator?
    /// Verify DKIM signatures of mail from outside.
    var dkimVerify = false
    var resolver: any DNSClient.Resolver
    var signing: [DKIMSigningIdentity] = []
    /// spamd, rspamd, the milter; asked together.
    var filters: [any ContentFilter] = []
    var filterFailure = FilterFailureAction.defer
    /// Our host name, for the filters (a milter's `j` macro).
    var hostname = ""
    var logger: Logger

    /// Whether there is anything to do at the end of the content.
    var isActive: Bool { spf || dmarc != nil || dkimVerify || !signing.isEmpty || !filters.isEmpty }

    /// The observer for one message, if DKIM has anything to do with it.
    func makeObserver(inbound: Bool, headerLimit: Int) -> (any ContentObserver)? {
        if inbound {
            return dkimVerify ? DKIMObserver(verifier: DKIMVerifier(headerLimit: headerLimit), signers: []) : nil
        }
        guard !signing.isEmpty else { return nil }
        return DKIMObserver(
            verifier: nil,
            signers: signing.map { identity in
                (
                    identity,
                    DKIMSigner(
                        domain: identity.domain, selector: identity.selector, key: identity.key,
                        headerLimit: headerLimit)
                )
            })
    }

    func run(_ input: ContentCheckInput) async -> ContentFacts {
        var facts = ContentFacts()
        let observer = input.observer as? DKIMObserver
        guard input.inbound else {
            facts.signature = sign(input, observer)
            return facts
        }
        if let spf = input.spf {
            facts.authenticationResults.append(
                AuthenticationResults.MethodResult(
                    method: "spf", result: spf.result, properties: [.smtp(spf.property, spf.value)]))
        }
        var dkimPassing: [String] = []
        if let verifier = observer?.verifier {
            let results = await verifier.verify(resolver: resolver, now: Date())
            dkimPassing = results.filter { $0.result == .pass }.map(\.domain)
            facts.dkim = Self.summary(results)
            if results.isEmpty {
                facts.authenticationResults.append(.init(method: "dkim", result: "none"))
            }
            for result in results {
                var properties: [AuthenticationResults.Property] = [
                    .header("d", result.domain), .header("s", result.selector),
                ]
                // RFC 6008: enough of b= to tell two signatures of one domain apart.
                if !result.signature.isEmpty { properties.append(.header("b", String(result.signature.prefix(8)))) }
                facts.authenticationResults.append(
                    .init(method: "dkim", result: result.result.rawValue, reason: result.reason, properties: properties)
                )
            }
        }
        if let dmarc {
            switch Self.authorDomain(input) {
            case .success(let from):
                let spf = input.spf.flatMap { spf in
                    SPFResult(rawValue: spf.result).map { (domain: spf.domain, result: $0) }
                }
                let verdict = await dmarc.evaluate(
                    fromDomain: from, spf: spf, dkimPassingDomains: dkimPassing, sample: Int.random(in: 0..<100))
                facts.dmarc = SessionPolicy.DMARCOutcome(
                    result: verdict.result.rawValue, requested: Self.requested(verdict), domain: verdict.fromDomain)
                var properties: [AuthenticationResults.Property] = [.header("from", from)]
                if let policy = verdict.requestedPolicy { properties.append(.policy("dmarc", policy.rawValue)) }
                facts.authenticationResults.append(
                    AuthenticationResults.MethodResult(
                        method: "dmarc", result: verdict.result.rawValue,
                        comment: verdict.result == .fail
                            ? "p=\(verdict.requestedPolicy?.rawValue ?? "none") dis=\(verdict.disposition.rawValue)"
                            : nil,
                        properties: properties))
            case .failure(let error):
                // RFC 7489 §6.6.1: no single author domain, no DMARC evaluation; recorded
                // as permerror and left to rules (`dmarc = "permerror"`).
                facts.dmarc = SessionPolicy.DMARCOutcome(result: "permerror", requested: .none, domain: "")
                facts.authenticationResults.append(
                    AuthenticationResults.MethodResult(method: "dmarc", result: "permerror", reason: "\(error)"))
            }
        }
        await runFilters(input, into: &facts)
        return facts
    }

    /// `pass` if any signature verified; else the first of fail, temperror, permerror; else none.
    static func summary(_ results: [DKIMResult]) -> String {
        for outcome in [DKIMResult.Outcome.pass, .fail, .temperror, .permerror]
        where results.contains(where: { $0.result == outcome }) {
            return outcome.rawValue
        }
        return "none"
    }

    /// A signature by the key of the `From:` domain or its closest parent among `[[dkim]]`
    /// (RFC 7489 relaxed alignment lets a parent domain's signature align).
    func sign(_ input: ContentCheckInput, _ observer: DKIMObserver?) -> String? {
        guard let observer, !observer.signers.isEmpty else { return nil }
        guard case .success(let from) = Self.authorDomain(input) else { return nil }
        let candidates = observer.signers.filter {
            from == $0.identity.domain || from.hasSuffix("." + $0.identity.domain)
        }
        guard let chosen = candidates.max(by: { $0.identity.domain.count < $1.identity.domain.count }) else {
            return nil
        }
        do {
            return try chosen.signer.signatureField(now: Date()).withoutFinalCRLF
        } catch {
            logger.error(
                "DKIM signing failed",
                metadata: ["event": "dkim_sign_error", "queue_id": "\(input.queueID)", "error": "\(error)"])
            return nil
        }
    }

    /// The `From:` domain (RFC 7489 §6.6.1): DMARC's subject, and the key a signature is made by.
    static func authorDomain(_ input: ContentCheckInput) -> Result<String, DMARCAuthorError> {
        DMARCEvaluator.authorDomain(
            fromFieldValues: input.header.filter { $0.name.lowercased() == "from" }.map(\.value))
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
