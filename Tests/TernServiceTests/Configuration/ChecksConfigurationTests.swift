import Foundation
import MailPolicy
import SMTPProtocol
import Testing

@testable import TernService

@Suite struct ChecksConfigurationTests {
    /// The example policy of docs/configuration.md, key for key.
    @Test func everyCheckKey() throws {
        let configuration = try parsed(
            """
            [limits]
            connection_rate = "60/1m"
            message_rate = "200/1h"
            recipient_rate = "1000/1h"

            [checks]
            milter = "unix:/run/opendkim/milter.sock"
            filter_max_size = 2000000
            filter_timeout = "20s"
            filter_failure = "accept"
            greet_pause = "2s"
            helo = "reject"

            [[rules]]
            name = "partners"
            if = { client = ["192.0.2.0/24", "2001:db8::/32"] }
            action = "accept"

            [[rules]]
            name = "no-fcrdns"
            if = { client_name = "unknown", helo_finding = ["not_fqdn", "bare_address"] }
            action = "score"
            score = 2.5

            [[rules]]
            name = "likely spam"
            if = { score = ">= 5", header = { Subject = ["*casino*", "*lottery*"] } }
            action = "tag"
            header = "X-Spam: yes"
            subject_prefix = "[SPAM] "

            [[rules]]
            name = "hold"
            if = { spam = true, dkim = "none", dmarc = ["fail"], spf = ["fail", "softfail"] }
            action = "quarantine"

            [[rules]]
            name = "abuse"
            if = { recipient = "abuse@*", sender = "<>", authenticated = false, helo = "*.example", dnsbl = "*" }
            action = "redirect"
            redirect = "security@example.org"

            [[rules]]
            name = "slow down"
            if = { score = 3 }
            action = "defer"
            reply = "450 4.7.1 Try later"

            [[rules]]
            name = "go away"
            action = "reject"
            reply = "554 5.7.1 Not here"
            """)
        let limits = configuration.limits
        #expect(limits.connectionRate == RateLimit(count: 60, window: .seconds(60)))
        #expect(limits.messageRate == RateLimit(count: 200, window: .seconds(3600)))
        #expect(limits.recipientRate == RateLimit(count: 1000, window: .seconds(3600)))
        let checks = configuration.checks
        #expect(checks.milter == .unix(path: "/run/opendkim/milter.sock"))
        #expect(checks.filterMaxSize == 2_000_000 && checks.filterTimeout == .seconds(20))
        #expect(checks.filterFailure == .accept && checks.greetPause == .seconds(2) && checks.helo == .reject)
        let rules = configuration.rules
        #expect(rules.map(\.name) == ["partners", "no-fcrdns", "likely spam", "hold", "abuse", "slow down", "go away"])
        #expect(rules.map(\.stage) == [.connect, .helo, .data, .data, .recipient, .data, .connect])
        #expect(rules[0].action == .accept)
        #expect(rules[1].action == .addScore(2.5))
        #expect(rules[2].action == .tag(header: "X-Spam: yes", subjectPrefix: "[SPAM] "))
        #expect(rules[2].conditions.count == 2)
        #expect(rules[3].action == .quarantine && rules[3].conditions.count == 4)
        #expect(rules[4].action == .redirect("security@example.org") && rules[4].conditions.count == 5)
        #expect(rules[5].action == .defer(SMTPReply(450, EnhancedStatusCode(4, 7, 1), "Try later")))
        #expect(rules[5].conditions == [.score(ScoreComparison(.atLeast, 3))])
        #expect(rules[6].action == .reject(SMTPReply(554, EnhancedStatusCode(5, 7, 1), "Not here")))
    }

    @Test func defaults() throws {
        let configuration = try parsed("")
        #expect(configuration.rules.isEmpty)
        #expect(configuration.limits.connectionRate == nil && configuration.limits.messageRate == nil)
        let checks = configuration.checks
        #expect(checks.milter == nil && checks.greetPause == nil && checks.helo == .off)
        #expect(checks.filterFailure == .defer && checks.filterMaxSize == 1_048_576)
    }

    @Test(arguments: [
        (
            "[limits]\nmessage_rate = \"100\"",
            "line 2: limits.message_rate: \"100\" is not a rate such as \"100/1h\" (a count over a duration)"
        ),
        (
            "[checks]\nmilter = \"unix:run/x\"",
            "line 2: checks.milter: \"unix:run/x\" is not a milter address such as \"127.0.0.1:8891\", \"inet:127.0.0.1:8891\" or \"unix:/run/milter.sock\""
        ),
        (
            "[checks]\ngreet_pause = \"2m\"",
            "line 2: checks.greet_pause: \"2m\" is too long: clients give up on a silent server"
        ),
        (
            "[checks]\nfilter_failure = \"drop\"",
            "line 2: checks.filter_failure: \"drop\": expected \"accept\" or \"defer\""
        ),
        ("[[rules]]\naction = \"accept\"", "line 1: rules[0].name: missing"),
        (
            "[[rules]]\nname = \"a\"",
            "line 1: rules[0].action: missing: accept, reject, defer, tag, score, quarantine, redirect or discard"
        ),
        (
            "[[rules]]\nname = \"a\"\naction = \"bounce\"",
            "line 3: rules[0].action: \"bounce\": expected accept, reject, defer, tag, score, quarantine, redirect or discard"
        ),
        (
            "[[rules]]\nname = \"a\"\naction = \"reject\"\nreply = \"450 4.7.1 later\"",
            "line 4: rules[0].reply: \"450 4.7.1 later\" is not a 5xx reply such as \"550 5.7.1 text\""
        ),
        (
            "[[rules]]\nname = \"a\"\naction = \"defer\"\nreply = \"451 5.7.1 x\"",
            "line 4: rules[0].reply: \"451 5.7.1 x\" is not a 4xx reply such as \"451 4.7.1 text\""
        ),
        (
            "[[rules]]\nname = \"a\"\naction = \"accept\"\nreply = \"550 no\"",
            "line 4: rules[0].reply: does not go with action \"accept\""
        ),
        (
            "[[rules]]\nname = \"a\"\naction = \"tag\"",
            "line 3: rules[0].action: \"tag\" needs header, subject_prefix or both"
        ),
        (
            "[[rules]]\nname = \"a\"\naction = \"tag\"\nheader = \"no colon\"",
            "line 4: rules[0].header: \"no colon\" is not a header field such as \"X-Spam: yes\""
        ),
        (
            "[[rules]]\nname = \"a\"\naction = \"redirect\"\nredirect = \"not an address\"",
            "line 4: rules[0].redirect: \"not an address\" is not a mail address"
        ),
        (
            "[[rules]]\nname = \"a\"\naction = \"score\"",
            "line 1: rules[0].score: missing: the points the rule adds (negative to subtract)"
        ),
        (
            "[[rules]]\nname = \"a\"\nif = { spf = \"bad\" }\naction = \"accept\"",
            "line 3: rules[0].if.spf: \"bad\": expected one of fail, neutral, none, pass, permerror, softfail, temperror"
        ),
        (
            "[[rules]]\nname = \"a\"\nif = { client = \"10.1.2.3/8\" }\naction = \"accept\"",
            "line 3: rules[0].if.client[0]: \"10.1.2.3/8\" has host bits set (did you mean 10.0.0.0?)"
        ),
        (
            "[[rules]]\nname = \"a\"\nif = { colour = \"red\" }\naction = \"accept\"",
            "line 3: rules[0].if.colour: unknown key"
        ),
        (
            "[[rules]]\nname = \"a\"\nif = { score = \"lots\" }\naction = \"accept\"",
            "line 3: rules[0].if.score: expected a number or a comparison such as \">= 5\""
        ),
        (
            "[[rules]]\nname = \"a\"\naction = \"accept\"\n[[rules]]\nname = \"A\"\naction = \"discard\"",
            "line 5: rules[1].name: \"A\" is already the name of rules[0]"
        ),
    ])
    func problemsAreNamed(text: String, expected: String) {
        #expect(problems(text) == [expected])
    }
}

@Suite struct DocumentedConfigurationTests {
    /// The example policies in docs/configuration.md are valid configurations: the
    /// documentation cannot drift from the reader. (The complete example names files that only
    /// exist on a real server.)
    @Test func examplePoliciesInTheDocsAreValid() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../../docs/configuration.md").standardized.path
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let blocks = text.components(separatedBy: "```toml\n").dropFirst().map {
            $0.components(separatedBy: "```")[0]
        }.filter { $0.contains("[[rules]]") }
        #expect(!blocks.isEmpty)
        for block in blocks {
            #expect(problems(block) == [], "\(block.prefix(200))")
        }
    }
}
