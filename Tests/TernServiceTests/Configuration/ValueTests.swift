import Testing

@testable import TernService

@Suite struct DurationTextTests {
    static let fixtures: [(String, Duration?)] = [
        ("90s", .seconds(90)),
        ("5m", .seconds(300)),
        ("4h", .seconds(14400)),
        ("5d", .seconds(432_000)),
        ("500ms", .milliseconds(500)),
        ("1h30m", .seconds(5400)),
        ("0s", .zero),
        ("", nil),
        ("5", nil),
        ("m", nil),
        ("-5m", nil),
        ("+5m", nil),
        ("5 m", nil),
        (" 5m", nil),
        ("5M", nil),
        ("5w", nil),
        ("1.5h", nil),
        ("5m3", nil),
        ("99999999999999999d", nil),
        ("36501d", nil),
    ]

    @Test(arguments: fixtures)
    func parse(_ text: String, _ expected: Duration?) {
        #expect(Duration(configurationText: text) == expected)
    }

    @Test(arguments: ["1m30s", "5m", "4h", "5d", "500ms", "1h30m", "1d2h3m4s5ms"])
    func roundTrip(_ text: String) throws {
        #expect(try #require(Duration(configurationText: text)).configurationText == text)
    }
}

@Suite struct ServiceAddressTests {
    static let fixtures: [(String, ServiceAddress?)] = [
        ("0.0.0.0:25", ServiceAddress(host: "0.0.0.0", port: 25)),
        ("[::1]:25", ServiceAddress(host: "::1", port: 25)),
        ("[::]:587", ServiceAddress(host: "::", port: 587)),
        ("[2001:db8::1]:65535", ServiceAddress(host: "2001:db8::1", port: 65535)),
        ("localhost:2525", ServiceAddress(host: "localhost", port: 2525)),
        ("mx.example.test:1", ServiceAddress(host: "mx.example.test", port: 1)),
        ("::1:25", nil),
        ("[::1]", nil),
        ("[::1]25", nil),
        ("[::1:25", nil),
        ("1.2.3.4", nil),
        ("1.2.3.4:", nil),
        ("1.2.3.4:0", nil),
        ("1.2.3.4:65536", nil),
        ("1.2.3.4:-1", nil),
        ("1.2.3.4:+25", nil),
        (":25", nil),
        ("a b:25", nil),
        ("[127.0.0.1]:25", nil),
    ]

    @Test(arguments: fixtures)
    func parse(_ text: String, _ expected: ServiceAddress?) {
        #expect(ServiceAddress(text) == expected)
    }

    @Test func defaultPortAndDescription() {
        #expect(ServiceAddress("127.0.0.1", defaultPort: 53) == ServiceAddress(host: "127.0.0.1", port: 53))
        #expect(ServiceAddress("[::1]", defaultPort: 53) == ServiceAddress(host: "::1", port: 53))
        #expect(ServiceAddress(host: "::1", port: 25).description == "[::1]:25")
        #expect(ServiceAddress(host: "127.0.0.1", port: 25).description == "127.0.0.1:25")
    }
}

@Suite struct KeyLineIndexTests {
    @Test func mapsKeysToLines() {
        let index = KeyLineIndex(
            source: """
                # comment = "not a key"
                top = 1
                [a]
                b = "x = 1 [c]"
                multi = \"\"\"
                line
                fake = 2
                \"\"\"
                after = [
                  "one",   # comment, with = signs
                  { k = 1 },
                ]
                d.e = true
                [[arr]]
                name = "first"
                [[arr]]
                name = 'second'
                [arr.sub]
                x = 1
                """)
        #expect(index.line(for: "top") == 2)
        #expect(index.line(for: "a") == 3)
        #expect(index.line(for: "a.b") == 4)
        #expect(index.line(for: "a.multi") == 5)
        #expect(index.exactLine(for: "a.fake") == nil)
        #expect(index.line(for: "a.after") == 9)
        #expect(index.line(for: "a.after[0]") == 10)
        #expect(index.line(for: "a.after[1]") == 11)
        #expect(index.line(for: "a.after[1].k") == 11)
        #expect(index.line(for: "a.d.e") == 13)
        #expect(index.line(for: "arr[0]") == 14)
        #expect(index.line(for: "arr[0].name") == 15)
        #expect(index.line(for: "arr[1].name") == 17)
        #expect(index.line(for: "arr[1].sub.x") == 19)
        #expect(index.line(for: "arr[1].missing") == 16)
        #expect(index.line(for: "nowhere") == nil)
    }
}

@Suite struct AliasTests {
    static let configuration: TernConfiguration = {
        var configuration = TernConfiguration(hostname: "mx.example.test", dataDirectory: "/tmp")
        configuration.domains = [
            LocalDomain(
                name: "Example.test", mailboxes: ["Alice", "bob", "carol"],
                aliases: [
                    "postmaster": ["alice"],
                    "Sales": ["alice", "Carol@Elsewhere.TEST", "team"],
                    "team": ["bob", "alice"],
                    "alice": ["alice", "archive@other.test"],
                    "other": ["info@other.test"],
                    "loop": ["loop"],
                    "ping": ["pong"],
                    "pong": ["ping", "bob"],
                    "deep0": ["deep1"], "deep1": ["deep2"], "deep2": ["deep3"], "deep3": ["deep4"],
                    "deep4": ["deep5"], "deep5": ["deep6"], "deep6": ["deep7"], "deep7": ["deep8"],
                    "deep8": ["deep9"], "deep9": ["deep10"], "deep10": ["deep11"], "deep11": ["bob"],
                ]),
            LocalDomain(name: "other.test", mailboxes: ["archive"], aliases: ["info": ["archive", "x@remote.test"]]),
        ]
        return configuration
    }()

    static let fixtures: [(String, String, [String]?)] = [
        ("bob", "example.test", ["bob@example.test"]),
        ("BOB", "EXAMPLE.TEST.", ["bob@example.test"]),
        ("nobody", "example.test", nil),
        ("bob", "elsewhere.test", nil),
        ("postmaster", "example.test", ["alice@example.test", "archive@other.test"]),
        (
            "sales", "example.test",
            ["alice@example.test", "archive@other.test", "Carol@elsewhere.test", "bob@example.test"]
        ),
        ("other", "example.test", ["archive@other.test", "x@remote.test"]),
        ("loop", "example.test", []),
        ("ping", "example.test", ["bob@example.test"]),
        ("deep0", "example.test", []),
        ("deep2", "example.test", ["bob@example.test"]),
    ]

    @Test(arguments: fixtures)
    func resolve(_ localPart: String, _ domain: String, _ expected: [String]?) {
        #expect(Self.configuration.resolve(localPart: localPart, domain: domain) == expected)
    }

    @Test func loopsAndDepthAreProblems() {
        let expansion = AliasExpansion(domains: Self.configuration.domains)
        #expect(
            expansion.resolve(localPart: "loop", domain: "example.test").problems == [
                "alias loop: loop@example.test → loop@example.test"
            ])
        #expect(
            expansion.resolve(localPart: "ping", domain: "example.test").problems == [
                "alias loop: ping@example.test → pong@example.test → ping@example.test"
            ])
        #expect(
            expansion.resolve(localPart: "deep0", domain: "example.test").problems.first?.hasPrefix(
                "alias expansion deeper than 10") == true)
        #expect(expansion.resolve(localPart: "sales", domain: "example.test").problems == [])
    }

    @Test func localDomainLookups() throws {
        let domain = try #require(Self.configuration.localDomain(named: "EXAMPLE.test"))
        #expect(domain.name == "example.test")
        #expect(domain.hasMailbox("ALICE"))
        #expect(!domain.hasMailbox("alice+tag"))
        #expect(domain.aliasTargets(of: "SALES") == ["alice", "Carol@elsewhere.test", "team"])
        #expect(domain.resolve(localPart: "other") == ["info@other.test"])
        #expect(Self.configuration.localDomain(named: "nowhere.test") == nil)
    }

    @Test func aliasesInTheFile() throws {
        let configuration = try parsed(
            """
            [[domains]]
            name = "a.test"
            mailboxes = ["alice"]
            aliases = { all = ["alice", "staff@b.test"], self = ["alice", "alice"] }

            [[domains]]
            name = "b.test"
            mailboxes = ["bob"]
            [domains.aliases]
            staff = ["bob", "outside@c.test"]
            """)
        #expect(
            configuration.resolve(localPart: "all", domain: "a.test") == [
                "alice@a.test", "bob@b.test", "outside@c.test",
            ])
        #expect(configuration.resolve(localPart: "staff", domain: "b.test") == ["bob@b.test", "outside@c.test"])
    }
}
