import NIOCore
import SMTPProtocol
import Testing

@testable import MailPolicy

/// A directory like the SPEC §1.2 example: example.test with alice, bob, and aliases.
struct FixtureDirectory: LocalRecipientDirectory {
    let mailboxes: [String: Set<String>] = ["example.test": ["alice", "bob", "postmaster"], "other.test": ["carol"]]
    let aliases: [String: [String: [String]]] = [
        "example.test": ["sales": ["alice@example.test", "dave@elsewhere.test"], "abuse": ["postmaster@example.test"]]
    ]

    var primaryDomain: String { "example.test" }
    func isLocalDomain(_ domain: String) -> Bool { mailboxes[domain] != nil }
    func isMailbox(localPart: String, domain: String) -> Bool { mailboxes[domain]?.contains(localPart) == true }
    func resolve(localPart: String, domain: String) -> [String]? {
        if let targets = aliases[domain]?[localPart] { return targets }
        return isMailbox(localPart: localPart, domain: domain) ? ["\(localPart)@\(domain)"] : nil
    }
}

@Suite struct RecipientPolicyTests {
    let policy = RecipientPolicy(directory: FixtureDirectory())
    let stranger = ClientFacts(address: IPAddress("203.0.113.9"), isTrusted: false)
    let trusted = ClientFacts(address: IPAddress("127.0.0.1"), isTrusted: true)

    func path(_ text: String) throws -> ForwardPath {
        guard case .rcpt(let path, _) = try SMTPCommand.parse(ByteBuffer(string: "RCPT TO:\(text)")) else {
            Issue.record("not a RCPT")
            return .postmaster
        }
        return path
    }

    func code(_ text: String, _ client: ClientFacts) throws -> String {
        switch policy.verify(try path(text), client: client) {
        case .success: return "ok"
        case .failure(let refusal): return "\(refusal.reply.code) \(refusal.reply.enhanced!)"
        }
    }

    @Test(arguments: [
        // Local recipients, in any case, with +detail.
        ("<alice@example.test>", "ok"),
        ("<ALICE@Example.TEST>", "ok"),
        ("<alice+lists@example.test>", "ok"),
        ("<sales@example.test>", "ok"),
        ("<Postmaster>", "ok"),
        ("<postmaster@example.test>", "ok"),
        ("<nobody@example.test>", "550 5.1.1"),
        ("<+x@example.test>", "550 5.1.1"),
        // Relaying and every trick for it: all refused for a stranger.
        ("<victim@remote.test>", "550 5.7.1"),
        ("<victim%remote.test@example.test>", "550 5.7.1"),
        ("<remote.test!victim@example.test>", "550 5.7.1"),
        ("<\"victim@remote.test\"@example.test>", "550 5.7.1"),
        ("<@example.test:victim@remote.test>", "550 5.7.1"),
        ("<@example.test,@other.test:victim@remote.test>", "550 5.7.1"),
        ("<victim@[192.0.2.1]>", "550 5.7.1"),
        ("<victim@[IPv6:2001:db8::1]>", "550 5.7.1"),
        ("<victim@sub.example.test>", "550 5.7.1"),
        ("<victim@example.test.remote.test>", "550 5.7.1"),
        ("<victim@EXAMPLE.test.evil>", "550 5.7.1"),
    ])
    func stranger(recipient: String, expected: String) throws {
        #expect(try code(recipient, stranger) == expected)
    }

    @Test(arguments: [
        ("<victim@remote.test>", "ok"),
        ("<victim@[192.0.2.1]>", "ok"),
        ("<nobody@example.test>", "550 5.1.1"),
        ("<victim%remote.test@example.test>", "550 5.1.1"),
    ])
    func trustedNetwork(recipient: String, expected: String) throws {
        #expect(try code(recipient, trusted) == expected)
    }

    @Test func authenticatedUsersMayRelay() throws {
        let user = ClientFacts(
            address: IPAddress("203.0.113.9"), isTrusted: false, authenticatedUser: "alice@example.test")
        #expect(try code("<victim@remote.test>", user) == "ok")
    }

    @Test func targetsExpandAliasesAndKeepTheDetail() throws {
        #expect(
            try policy.verify(path("<sales@example.test>"), client: stranger).get() == [
                "alice@example.test", "dave@elsewhere.test",
            ])
        #expect(
            try policy.verify(path("<Alice+News@example.test>"), client: stranger).get() == ["alice+news@example.test"])
        #expect(try policy.verify(path("<Postmaster>"), client: stranger).get() == ["postmaster@example.test"])
    }
}
