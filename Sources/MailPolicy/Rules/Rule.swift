import Foundation
import SMTPProtocol

/// One `[[rules]]` entry: conditions that must all hold and the action taken when they do
/// (SPEC §2.6, after a classic filter's tests and actions). A rule is decided at the stage its
/// latest fact becomes known; rules are checked in the order written.
public struct Rule: Sendable, Hashable {
    public var name: String
    public var conditions: [RuleCondition]
    public var action: RuleAction

    public init(name: String, conditions: [RuleCondition], action: RuleAction) {
        self.name = name
        self.conditions = conditions
        self.action = action
    }

    /// The stage at which every fact the rule names is known.
    public var stage: PolicyStage {
        conditions.map(\.stage).max() ?? .connect
    }

    public func matches(_ facts: PolicyFacts) -> Bool {
        conditions.allSatisfy { $0.matches(facts) }
    }
}

/// A test on the facts of a session. Lists mean "any of".
public enum RuleCondition: Sendable, Hashable {
    case client([NetworkRange])
    /// The confirmed reverse name; `unknown` matches a client without one (Postfix's word).
    case clientName([WildcardPattern])
    case helo([WildcardPattern])
    /// Any of these HELO check findings.
    case heloFinding(Set<String>)
    case authenticated(Bool)
    /// The reverse path; `<>` matches the null sender.
    case sender([WildcardPattern])
    /// Any recipient matches any pattern.
    case recipient([WildcardPattern])
    /// A header field of this name (case-insensitive) whose unfolded value matches.
    case header(name: String, patterns: [WildcardPattern])
    case spf(Set<String>)
    case dkim(Set<String>)
    case dmarc(Set<String>)
    /// Listed in any of these DNS list zones; `*` for any zone.
    case listedIn(Set<String>)
    case score(ScoreComparison)
    case spam(Bool)

    public var stage: PolicyStage {
        switch self {
        case .client, .clientName, .listedIn: .connect
        case .helo, .heloFinding: .helo
        case .authenticated, .sender, .spf: .mail
        case .recipient: .recipient
        case .header, .dkim, .dmarc, .score, .spam: .data
        }
    }

    public func matches(_ facts: PolicyFacts) -> Bool {
        switch self {
        case .client(let ranges):
            guard let client = facts.client else { return false }
            return ranges.contains { $0.contains(client) }
        case .clientName(let patterns):
            return patterns.contains { $0.matches(facts.clientName ?? "unknown") }
        case .helo(let patterns):
            guard let helo = facts.helo else { return false }
            return patterns.contains { $0.matches(helo) }
        case .heloFinding(let names):
            return !names.isDisjoint(with: facts.heloFindings)
        case .authenticated(let wanted):
            return facts.authenticated == wanted
        case .sender(let patterns):
            guard let sender = facts.sender else { return false }
            return patterns.contains { $0.matches(sender.isEmpty ? "<>" : sender) }
        case .recipient(let patterns):
            return facts.recipients.contains { recipient in patterns.contains { $0.matches(recipient) } }
        case .header(let name, let patterns):
            guard let header = facts.header else { return false }
            return header.contains { field in
                field.name.lowercased() == name && patterns.contains { $0.matches(field.value) }
            }
        case .spf(let results):
            return facts.spf.map(results.contains) ?? false
        case .dkim(let results):
            return facts.dkim.map(results.contains) ?? false
        case .dmarc(let results):
            return facts.dmarc.map(results.contains) ?? false
        case .listedIn(let zones):
            return zones.contains("*") ? !facts.listedZones.isEmpty : !zones.isDisjoint(with: facts.listedZones)
        case .score(let comparison):
            return comparison.holds(for: facts.score)
        case .spam(let wanted):
            return facts.spam == wanted
        }
    }
}

/// `score = ">= 5"`: a comparison with a number.
public struct ScoreComparison: Sendable, Hashable, CustomStringConvertible {
    public enum Operator: String, Sendable, Hashable, CaseIterable {
        case atLeast = ">="
        case above = ">"
        case atMost = "<="
        case below = "<"
    }

    public var op: Operator
    public var value: Double

    public init(_ op: Operator, _ value: Double) {
        self.op = op
        self.value = value
    }

    /// `>= 5`, `> 2.5`, `<= -1`, `< 0`; a bare number means `>=`.
    public init?(_ text: String) {
        var rest = Substring(text.trimmingCharacters(in: .whitespaces))
        var op = Operator.atLeast
        // Longest operators first, so that ">=" is not read as ">" and "=5".
        for candidate in [Operator.atLeast, .atMost, .above, .below] where rest.hasPrefix(candidate.rawValue) {
            op = candidate
            rest = rest.dropFirst(candidate.rawValue.count)
            break
        }
        guard let value = Double(rest.trimmingCharacters(in: .whitespaces)), value.isFinite else { return nil }
        self.init(op, value)
    }

    public func holds(for score: Double) -> Bool {
        switch op {
        case .atLeast: score >= value
        case .above: score > value
        case .atMost: score <= value
        case .below: score < value
        }
    }

    public var description: String { "\(op.rawValue) \(value)" }
}

/// What a matching rule does (OpenSMTPD's and Postfix's verdict vocabulary).
public enum RuleAction: Sendable, Hashable {
    /// Take the message; no later rule, score or check refuses it.
    case accept
    /// Refuse with this 5xx reply.
    case reject(SMTPReply)
    /// Refuse for now with this 4xx reply.
    case `defer`(SMTPReply)
    /// Add a header field and/or prefix the subject; later rules still run.
    case tag(header: String?, subjectPrefix: String?)
    /// Add points to the score (negative to subtract); later rules still run.
    case addScore(Double)
    /// Take the message and hold it in the queue until `tern queue release`.
    case quarantine
    /// Take the message and deliver it to this address instead of its recipients.
    case redirect(String)
    /// Take the message and drop it.
    case discard

    /// Whether the rule ends the checking: everything but `tag` and `score` does.
    public var isFinal: Bool {
        switch self {
        case .tag, .addScore: false
        default: true
        }
    }

    public var name: String {
        switch self {
        case .accept: "accept"
        case .reject: "reject"
        case .defer: "defer"
        case .tag: "tag"
        case .addScore: "score"
        case .quarantine: "quarantine"
        case .redirect: "redirect"
        case .discard: "discard"
        }
    }
}

extension Array where Element == Rule {
    /// The rules decided at `stage` that match, in order, up to the first final one.
    public func matching(at stage: PolicyStage, _ facts: PolicyFacts) -> [Rule] {
        var matched: [Rule] = []
        for rule in self where rule.stage == stage && rule.matches(facts) {
            matched.append(rule)
            if rule.action.isFinal { break }
        }
        return matched
    }
}
