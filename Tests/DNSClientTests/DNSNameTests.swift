import Testing

@testable import DNSClient

@Suite struct DNSNameTests {
    static let valid: [(String, String, Int)] = [
        ("example.com", "example.com", 2),
        ("example.com.", "example.com", 2),
        ("", ".", 0),
        (".", ".", 0),
        ("a\\.b.c", "a\\.b.c", 2),
        ("\\065b", "Ab", 1),
        ("tab\\009x", "tab\\009x", 1),
        ("_25._tcp.mx.example.com", "_25._tcp.mx.example.com", 5),
    ]

    @Test(arguments: valid)
    func presentationForm(text: String, description: String, labels: Int) throws {
        let name = try DNSName(text)
        #expect(name.description == description)
        #expect(name.labels.count == labels)
        #expect(try DNSName(name.description) == name)
    }

    static let invalid: [(String, DNSFormatError)] = [
        ("a..b", .badLabel),
        (".a", .badLabel),
        ("a\\", .badLabel),
        ("a\\25", .badLabel),
        ("a\\300", .badLabel),
        (String(repeating: "a", count: 64) + ".com", .badLabel),
        (Array(repeating: String(repeating: "a", count: 63), count: 4).joined(separator: "."), .nameTooLong),
    ]

    @Test(arguments: invalid)
    func invalidPresentationForm(text: String, error: DNSFormatError) {
        #expect(throws: error) { try DNSName(text) }
    }

    @Test func longestNameIs255Octets() throws {
        // 3 × 63 + 61 octets of labels, 4 length octets, the root: 255.
        let labels = Array(repeating: String(repeating: "a", count: 63), count: 3) + [String(repeating: "b", count: 61)]
        #expect(try DNSName(labels.joined(separator: ".")).wireLength == 255)
    }

    @Test func comparisonIgnoresASCIICase() {
        let upper: DNSName = "MX1.Example.COM"
        #expect(upper == "mx1.example.com")
        #expect(upper.hashValue == DNSName("mx1.example.com").hashValue)
        #expect(upper.description == "MX1.Example.COM")
        #expect(DNSName("mx1.example.com") != "mx2.example.com")
        #expect(DNSName("mx.example.com").isSubdomain(of: "EXAMPLE.com"))
        #expect(!DNSName("example.com").isSubdomain(of: "mx.example.com"))
    }
}

@Suite struct IPAddressTests {
    @Test(arguments: ["192.0.2.1", "0.0.0.0", "255.255.255.255"])
    func ipv4RoundTrip(text: String) {
        #expect(IPv4Address(text)?.description == text)
    }

    @Test(arguments: ["192.0.2", "192.0.2.1.5", "256.0.0.1", "01.2.3.4", "1.2.3.-4", "1..2.3", "a.b.c.d", ""])
    func ipv4Invalid(text: String) {
        #expect(IPv4Address(text) == nil)
    }

    static let ipv6: [(String, String)] = [
        ("2001:db8::1", "2001:db8::1"),
        ("2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("::", "::"),
        ("::1", "::1"),
        ("1::", "1::"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
        ("::ffff:192.0.2.1", "::ffff:c000:201"),
        ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"),
    ]

    @Test(arguments: ipv6)
    func ipv6Text(text: String, canonical: String) {
        #expect(IPv6Address(text)?.description == canonical)
    }

    @Test(arguments: [
        "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "1::2::3", "12345::", ":1", "1:", "g::1", "::1.2.3", "",
        "1:2:3:4:5:6:7::8",
    ])
    func ipv6Invalid(text: String) {
        #expect(IPv6Address(text) == nil)
    }

    @Test func reverseNames() {
        #expect(IPv4Address("192.0.2.1")!.reverseName == "1.2.0.192.in-addr.arpa")
        #expect(
            IPv6Address("2001:db8::567:89ab")!.reverseName
                == "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa")
    }
}
