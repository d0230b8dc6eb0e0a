import SMTPProtocol
import Testing

@testable import MailPolicy

@Suite struct RuleTests {
    @Test(arguments: [
        ("*@example.com", "joe@EXAMPLE.com", true),
        ("*@example.com", "joe@example.com.evil", false),
        ("joe?@*", "joe1@x", true),
        ("joe?@*", "joe@x", false),
        ("*", "", true),
        ("", "", true),
        ("", "a", false),
        ("a*b*c", "aXXbYYc", true),
        ("a*b*c", "aXXbYY", false),
        ("*viagra*", "Cheap VIAGRA now", true),
        ("**", "anything", true),
    ])
    func wildcardPatterns(pattern: String, text: String, matches: Bool) {
        #expect(WildcardPattern(pattern).matches(text) == matches)
    }

    /// A pathological pattern against a long text ends quickly (no exponential backtracking).
    @Test func wildcardPatternIsLinearEnough() {
        let pattern = WildcardPattern(String(repeating: "*a", count: 50) + "b")
        #expect(!pattern.matches(String(repeating: "a", count: 5000)))
    }

    @Test(arguments: [
        (">= 5", ScoreComparison(.atLeast, 5)),
        ("> 2.5", ScoreComparison(.above, 2.5)),
        ("<=-1", ScoreComparison(.atMost, -1)),
        ("< 0", ScoreComparison(.below, 0)),
        ("7", ScoreComparison(.atLeast, 7)),
    ])
    func scoreComparisons(text: String, expected: ScoreComparison) {
        #expect(ScoreComparison(text) == expected)
    }

    @Test(arguments: ["", ">=", "= 5", "five", "> nan", ">= inf"])
    func invalidScoreComparisons(text: String) {
        #expect(ScoreComparison(text) == nil)
    }

    @Test func stageIsTheLatestFact() {
        let rule = Rule(
            name: "r", conditions: [.client([try! NetworkRange("192.0.2.0/24")]), .spf(["fail"])], action: .discard)
        #expect(rule.stage == .mail)
        #expect(Rule(name: "always", conditions: [], action: .accept).stage == .connect)
        #expect(Rule(name: "h", conditions: [.header(name: "subject", patterns: [])], action: .accept).stage == .data)
    }

    @Test func conditions() throws {
        var facts = PolicyFacts()
        facts.client = IPAddress("192.0.2.7")
        facts.sender = ""
        facts.recipients = ["abuse@example.org"]
        facts.header = [("Subject", "Win a prize"), ("From", "x@y")]
        facts.spf = "softfail"
        facts.listedZones = ["zen.example"]
        facts.score = 4.5
        let table: [(RuleCondition, Bool)] = [
            (.client([try NetworkRange("192.0.2.0/24")]), true),
            (.client([try NetworkRange("198.51.100.0/24")]), false),
            (.clientName([WildcardPattern("unknown")]), true),
            (.helo([WildcardPattern("*")]), false),
            (.authenticated(false), true),
            (.sender([WildcardPattern("<>")]), true),
            (.recipient([WildcardPattern("abuse@*")]), true),
            (.recipient([WildcardPattern("postmaster@*")]), false),
            (.header(name: "subject", patterns: [WildcardPattern("*prize*")]), true),
            (.header(name: "subject", patterns: [WildcardPattern("*loan*")]), false),
            (.header(name: "x-missing", patterns: [WildcardPattern("*")]), false),
            (.spf(["fail", "softfail"]), true),
            (.dkim(["none"]), false),
            (.listedIn(["*"]), true),
            (.listedIn(["other.example"]), false),
            (.score(ScoreComparison(.atLeast, 4.5)), true),
            (.score(ScoreComparison(.above, 4.5)), false),
            (.spam(false), true),
        ]
        for (condition, expected) in table {
            #expect(condition.matches(facts) == expected, "\(condition)")
        }
    }

    @Test func matchingStopsAtTheFirstFinalRule() {
        let reject = SMTPReply(550, EnhancedStatusCode(5, 7, 1), "no")
        let rules = [
            Rule(name: "tag", conditions: [.spam(false)], action: .tag(header: "X-A: 1", subjectPrefix: nil)),
            Rule(name: "score", conditions: [.spam(false)], action: .addScore(2)),
            Rule(name: "early", conditions: [.authenticated(false)], action: .reject(reject)),
            Rule(name: "reject", conditions: [.spam(false)], action: .reject(reject)),
            Rule(name: "never", conditions: [.spam(false)], action: .accept),
        ]
        let facts = PolicyFacts()
        #expect(rules.matching(at: .data, facts).map(\.name) == ["tag", "score", "reject"])
        #expect(rules.matching(at: .mail, facts).map(\.name) == ["early"])
        #expect(rules.matching(at: .connect, facts).isEmpty)
    }
}
