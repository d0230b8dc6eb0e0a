import SMTPProtocol
import Testing

@testable import MailPolicy

@Suite struct SessionPolicyTests {
    static let reject = SMTPReply(550, EnhancedStatusCode(5, 7, 1), "go away")

    func policy(_ rules: [Rule] = [], spf: SPFMode = .off, dmarc: DMARCMode = .off, helo: HELOMode = .off)
        -> SessionPolicy
    {
        SessionPolicy(
            configuration: .init(
                hostname: "mx.example.test", rules: rules, rejectScore: 10, spf: spf, dmarc: dmarc, helo: helo))
    }

    @Test func dnsListScoreRefusesAtTheFirstRecipient() {
        var session = policy()
        session.connected(
            client: IPAddress("192.0.2.9"), clientName: nil, listedZones: ["bl.test"], listScore: 10,
            authenticated: false)
        session.helo("mail.example.net", findings: [])
        #expect(session.mail(sender: "a@example.net", spf: nil) == nil)
        let refusal = session.recipient("joe@example.test")
        #expect(refusal?.reply.code == 550 && refusal?.reply.enhanced == EnhancedStatusCode(5, 7, 1))
    }

    @Test func allowListWeightCancelsABlockList() {
        var session = policy()
        session.connected(
            client: IPAddress("192.0.2.9"), clientName: nil, listedZones: ["bl.test", "wl.test"], listScore: 0,
            authenticated: false)
        _ = session.mail(sender: "a@example.net", spf: nil)
        #expect(session.recipient("joe@example.test") == nil)
    }

    @Test func spfFailIsRefusedOnlyInRejectMode() {
        var rejecting = policy(spf: .reject)
        rejecting.connected(client: nil, clientName: nil, listedZones: [], listScore: 0, authenticated: false)
        #expect(rejecting.mail(sender: "a@example.net", spf: "fail")?.reply.enhanced == EnhancedStatusCode(5, 7, 23))
        #expect(rejecting.mail(sender: "a@example.net", spf: "softfail") == nil)
        var tagging = policy(spf: .tag)
        #expect(tagging.mail(sender: "a@example.net", spf: "fail") == nil)
    }

    @Test func heloRejectModeWaitsForTheRecipient() {
        var session = policy(helo: .reject)
        session.connected(client: nil, clientName: nil, listedZones: [], listScore: 0, authenticated: false)
        session.helo("mx.example.test", findings: ["our_name"])
        #expect(session.mail(sender: "", spf: nil) == nil)
        #expect(session.recipient("joe@example.test")?.reason == "helo_our_name")
        var off = policy()
        off.helo("mx.example.test", findings: ["our_name"])
        _ = off.mail(sender: "", spf: nil)
        #expect(off.recipient("joe@example.test") == nil)
    }

    @Test func acceptRuleAtConnectWinsOverEverything() throws {
        var session = policy(
            [Rule(name: "partner", conditions: [.client([try NetworkRange("192.0.2.0/24")])], action: .accept)],
            spf: .reject, dmarc: .enforce)
        session.connected(
            client: IPAddress("192.0.2.9"), clientName: nil, listedZones: ["bl"], listScore: 50, authenticated: false)
        #expect(session.mail(sender: "a@example.net", spf: "fail") == nil)
        #expect(session.recipient("joe@example.test") == nil)
        let decision = session.content(
            header: [], dkim: "fail", dmarc: .init(result: "fail", requested: .reject, domain: "example.net"),
            filters: [.init(name: "spamd", score: 100, isSpam: true)])
        #expect(decision == .accept(.deliver, tags: [], subjectPrefix: nil))
    }

    @Test func dmarcEnforcement() {
        var session = policy(dmarc: .enforce)
        _ = session.mail(sender: "a@example.net", spf: "fail")
        let rejected = session.content(
            header: [], dkim: "none", dmarc: .init(result: "fail", requested: .reject, domain: "example.net"),
            filters: [])
        guard case .refuse(let reply, _) = rejected else {
            Issue.record("not refused")
            return
        }
        #expect(reply.code == 550 && reply.enhanced == EnhancedStatusCode(5, 7, 1))
        _ = session.mail(sender: "a@example.net", spf: "fail")
        let held = session.content(
            header: [], dkim: "none", dmarc: .init(result: "fail", requested: .quarantine, domain: "example.net"),
            filters: [])
        #expect(held == .accept(.quarantine(reason: "DMARC policy of example.net"), tags: [], subjectPrefix: nil))
        _ = session.mail(sender: "a@example.net", spf: "pass")
        let none = session.content(
            header: [], dkim: "none", dmarc: .init(result: "fail", requested: .none, domain: "example.net"), filters: []
        )
        #expect(none == .accept(.deliver, tags: [], subjectPrefix: nil))
        var tagging = policy(dmarc: .tag)
        _ = tagging.mail(sender: "a@example.net", spf: "fail")
        let tagged = tagging.content(
            header: [], dkim: "none", dmarc: .init(result: "fail", requested: .reject, domain: "example.net"),
            filters: [])
        #expect(tagged == .accept(.deliver, tags: [], subjectPrefix: nil))
    }

    @Test func filterScoreAndRules() {
        var session = policy([
            Rule(
                name: "tag", conditions: [.score(ScoreComparison(.atLeast, 5))],
                action: .tag(header: "X-Spam: yes", subjectPrefix: "[SPAM] ")),
            Rule(
                name: "hold",
                conditions: [.spam(true), .header(name: "subject", patterns: [WildcardPattern("*hold*")])],
                action: .quarantine),
        ])
        _ = session.mail(sender: "a@example.net", spf: nil)
        let tagged = session.content(
            header: [("Subject", "hi")], dkim: nil, dmarc: nil, filters: [.init(name: "spamd", score: 6, isSpam: true)])
        #expect(tagged == .accept(.deliver, tags: ["X-Spam: yes"], subjectPrefix: "[SPAM] "))
        _ = session.mail(sender: "a@example.net", spf: nil)
        let held = session.content(
            header: [("Subject", "please hold")], dkim: nil, dmarc: nil,
            filters: [.init(name: "spamd", score: 6, isSpam: true)])
        #expect(held == .accept(.quarantine(reason: "rule \"hold\""), tags: ["X-Spam: yes"], subjectPrefix: "[SPAM] "))
        _ = session.mail(sender: "a@example.net", spf: nil)
        let refused = session.content(
            header: [], dkim: nil, dmarc: nil, filters: [.init(name: "spamd", score: 1000, isSpam: true)])
        guard case .refuse(let reply, _) = refused else {
            Issue.record("not refused")
            return
        }
        #expect(reply.description == "550 5.7.1 Message refused as spam (score 1000)")
    }

    @Test func filterRequestsStand() {
        var session = policy()
        let tempfail = SMTPReply(451, EnhancedStatusCode(4, 7, 1), "later")
        _ = session.mail(sender: "a@example.net", spf: nil)
        #expect(
            session.content(
                header: [], dkim: nil, dmarc: nil,
                filters: [.init(name: "milter", score: nil, isSpam: false, request: .defer(tempfail))])
                == .refuse(tempfail, reason: "filter milter"))
        _ = session.mail(sender: "a@example.net", spf: nil)
        #expect(
            session.content(
                header: [], dkim: nil, dmarc: nil,
                filters: [.init(name: "milter", score: nil, isSpam: false, request: .discard)])
                == .accept(.discard(reason: "filter milter"), tags: [], subjectPrefix: nil))
    }

    @Test func recipientRulesDecidePerRecipient() {
        var session = policy([
            Rule(
                name: "no-abuse", conditions: [.recipient([WildcardPattern("abuse@*")])], action: .reject(Self.reject)),
            Rule(
                name: "redirect", conditions: [.recipient([WildcardPattern("old@*")])],
                action: .redirect("new@example.test")),
        ])
        _ = session.mail(sender: "a@example.net", spf: nil)
        #expect(session.recipient("abuse@example.test")?.reply == Self.reject)
        #expect(session.recipient("joe@example.test") == nil)
        #expect(session.recipient("old@example.test") == nil)
        #expect(
            session.content(header: [], dkim: nil, dmarc: nil, filters: [])
                == .accept(.redirect("new@example.test"), tags: [], subjectPrefix: nil))
        // The next transaction starts clean.
        _ = session.mail(sender: "a@example.net", spf: nil)
        #expect(
            session.content(header: [], dkim: nil, dmarc: nil, filters: [])
                == .accept(.deliver, tags: [], subjectPrefix: nil))
    }

    @Test func sessionRulesApplyOnceDespiteASecondEHLO() {
        var session = policy([Rule(name: "score", conditions: [.helo([WildcardPattern("*")])], action: .addScore(6))])
        session.helo("a.example", findings: [])
        session.helo("a.example", findings: [])
        _ = session.mail(sender: "x@example.net", spf: nil)
        #expect(session.facts.score == 6)
        #expect(session.recipient("joe@example.test") == nil)
    }
}
