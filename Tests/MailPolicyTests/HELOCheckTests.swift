import DNSClient
import Testing

@testable import MailPolicy

/// Names with records, names that fail, names that hang; anything else is NXDOMAIN.
private struct HELOResolver: Resolver {
    var records: [String: [DNSRecordData]] = [
        "mail.example.test A": [.a(IPv4Address("192.0.2.25")!)],
        "v6only.example.test AAAA": [.aaaa(IPv6Address("2001:db8::25")!)],
        "mxonly.example.test MX": [.mx(preference: 10, exchange: "mail.example.test")],
    ]
    var failing: Set<String> = ["flaky.example.test"]
    var hanging: Set<String> = ["slow.example.test"]

    func query(_ name: DNSName, type: DNSRecordType) async throws(DNSError) -> DNSAnswer<[DNSRecordData]> {
        let key = name.description.lowercased()
        if hanging.contains(key) {
            try? await Task.sleep(for: .seconds(30))
            throw .temporary("timeout")
        }
        if failing.contains(key) { throw .temporary("SERVFAIL") }
        guard let found = records["\(key) \(type)"] else {
            throw records.keys.contains { $0.hasPrefix(key + " ") } ? .noData : .nameNotFound
        }
        return DNSAnswer(value: found, authenticated: false, ttl: 60, canonicalName: key)
    }
}

private let ourNames: Set<String> = ["mx.tern.test", "Tern.TEST."]
private let ourAddresses: Set<IPAddress> = [IPAddress("198.51.100.25")!, IPAddress("2001:db8:ffff::25")!]

@Suite struct HELOCheckTests {
    @Test(
        arguments: [
            // Good names and literals.
            ("mail.example.test", "192.0.2.25", []),
            ("MAIL.Example.Test", "192.0.2.25", []),
            ("a-b.c1.example.test", "192.0.2.25", []),
            ("[192.0.2.25]", "192.0.2.25", []),
            ("[192.0.2.25]", "::ffff:192.0.2.25", []),
            ("[IPv6:2001:db8::25]", "2001:db8::25", []),
            ("[ipv6:2001:DB8:0:0:0:0:0:25]", "2001:db8::25", []),
            // RFC 5321 §4.1.3: Snum is 1*3DIGIT, leading zeros and all.
            ("[192.0.2.025]", "192.0.2.25", []),
            // Syntax (RFC 5321 §4.1.2, §4.1.3).
            ("", "192.0.2.25", [.invalidSyntax]),
            ("mail_server.example.test", "192.0.2.25", [.invalidSyntax]),
            ("-mail.example.test", "192.0.2.25", [.invalidSyntax]),
            ("mail-.example.test", "192.0.2.25", [.invalidSyntax]),
            ("mail..example.test", "192.0.2.25", [.invalidSyntax]),
            ("mail.example.test.", "192.0.2.25", [.invalidSyntax]),
            ("mail example.test", "192.0.2.25", [.invalidSyntax]),
            ("mäil.example.test", "192.0.2.25", [.invalidSyntax]),
            ("1.2.3", "192.0.2.25", [.invalidSyntax]),
            ("[192.0.2.256]", "192.0.2.25", [.invalidSyntax]),
            ("[192.0.2.25", "192.0.2.25", [.invalidSyntax]),
            ("[2001:db8::25]", "2001:db8::25", [.invalidSyntax]),
            ("[IPv6:192.0.2.25]", "192.0.2.25", [.invalidSyntax]),
            ("[x-tag:whatever]", "192.0.2.25", [.invalidSyntax]),
            ("[]", "192.0.2.25", [.invalidSyntax]),
            ("[", "192.0.2.25", [.invalidSyntax]),
            (String(repeating: "a", count: 64) + ".example.test", "192.0.2.25", [.invalidSyntax]),
            // Bare and foreign addresses.
            ("192.0.2.25", "192.0.2.25", [.bareAddress]),
            ("192.0.2.99", "192.0.2.25", [.bareAddress, .addressMismatch]),
            ("2001:db8::25", "2001:db8::25", [.bareAddress]),
            ("[192.0.2.99]", "192.0.2.25", [.addressMismatch]),
            ("[127.0.0.1]", "192.0.2.25", [.addressMismatch]),
            // Not fully qualified.
            ("mypc", "192.0.2.25", [.notFullyQualified]),
            ("WIN-ABC123", "192.0.2.25", [.notFullyQualified]),
            // Localhost, unless it is true.
            ("localhost", "192.0.2.25", [.localhost]),
            ("LOCALHOST.localdomain", "192.0.2.25", [.localhost]),
            ("box.localhost", "192.0.2.25", [.localhost]),
            ("localhost", "127.0.0.1", []),
            ("localhost", "::1", []),
            ("[127.0.0.1]", "127.0.0.1", []),
            // Claims to be us, unless it is us.
            ("mx.tern.test", "192.0.2.25", [.claimsOurName]),
            ("TERN.test", "192.0.2.25", [.claimsOurName]),
            ("mx.tern.test", "198.51.100.25", []),
            ("other.tern.test", "192.0.2.25", []),
            ("[198.51.100.25]", "192.0.2.25", [.addressMismatch, .claimsOurAddress]),
            ("198.51.100.25", "192.0.2.25", [.bareAddress, .addressMismatch, .claimsOurAddress]),
            ("[IPv6:2001:db8:ffff::25]", "2001:db8::25", [.addressMismatch, .claimsOurAddress]),
            ("[198.51.100.25]", "198.51.100.25", []),
        ] as [(String, String, [HELOFinding])])
    func withoutDNS(helo: String, client: String, expected: [HELOFinding]) {
        let found = HELOCheck.findings(
            helo: helo, client: IPAddress(client)!, ourNames: ourNames, ourAddresses: ourAddresses)
        #expect(found == expected)
    }

    @Test(
        arguments: [
            ("mail.example.test", []),
            ("v6only.example.test", []),
            ("mxonly.example.test", []),
            ("nowhere.example.test", [.unresolvable]),
            ("flaky.example.test", [.lookupFailed]),
            // No DNS for names already found wanting.
            ("mypc", [.notFullyQualified]),
            ("mx.tern.test", [.claimsOurName]),
            ("[192.0.2.25]", []),
        ] as [(String, [HELOFinding])])
    func withDNS(helo: String, expected: [HELOFinding]) async {
        let found = await HELOCheck.findings(
            helo: helo, client: IPAddress("192.0.2.25")!, ourNames: ourNames, ourAddresses: ourAddresses,
            resolver: HELOResolver(), timeLimit: .seconds(20))
        #expect(found == expected)
    }

    @Test func aLookupThatHangsIsBounded() async {
        let start = ContinuousClock.now
        let found = await HELOCheck.findings(
            helo: "slow.example.test", client: IPAddress("192.0.2.25")!, ourNames: ourNames,
            ourAddresses: ourAddresses, resolver: HELOResolver(), timeLimit: .milliseconds(300))
        #expect(found == [.lookupFailed])
        // The resolver would take 30 s.
        #expect(ContinuousClock.now - start < .seconds(20))
    }

    @Test func findingsHaveConfigurationNames() {
        #expect(
            HELOFinding.allCases.map(\.description) == [
                "invalid_syntax", "bare_address", "address_mismatch", "not_fqdn", "localhost", "our_name",
                "our_address", "unresolvable", "lookup_failed",
            ])
    }
}
