import MailPolicy
import Testing

@Suite struct IPAddressTests {
    /// Text → canonical text (RFC 5952), or nil when invalid.
    static let fixtures: [(String, String?)] = [
        ("127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "0.0.0.0"),
        ("255.255.255.255", "255.255.255.255"),
        ("192.0.2.1", "192.0.2.1"),
        ("256.0.0.1", nil),
        ("1.2.3", nil),
        ("1.2.3.4.5", nil),
        ("01.2.3.4", nil),
        ("1.2.3.", nil),
        ("1..3.4", nil),
        ("a.b.c.d", nil),
        ("", nil),
        (" 1.2.3.4", nil),
        ("::", "::"),
        ("::1", "::1"),
        ("1::", "1::"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:0000:0002:0001", "2001:db8::2:1"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
        ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),
        ("fe80::1:2", "fe80::1:2"),
        ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
        ("::FFFF:7f00:1", "::ffff:127.0.0.1"),
        ("::1.2.3.4", "::102:304"),
        ("64:ff9b::192.0.2.33", "64:ff9b::c000:221"),
        ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"),
        ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
        ("1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304"),
        ("1:2:3:4:5:6:7:8:9", nil),
        ("1:2:3:4:5:6:7", nil),
        ("1::2::3", nil),
        (":::", nil),
        (":1::", nil),
        ("1:", nil),
        ("1:2:3:4:5:6:7:8::", nil),
        ("12345::", nil),
        ("g::1", nil),
        ("::1.2.3.4:5", nil),
        ("::ffff:256.1.1.1", nil),
        ("fe80::1%eth0", nil),
        ("[::1]", nil),
    ]

    @Test(arguments: fixtures)
    func parseAndDescribe(_ text: String, _ canonical: String?) {
        #expect(IPAddress(text)?.description == canonical)
    }

    @Test func canonicalTextParsesToTheSameAddress() throws {
        for (text, canonical) in Self.fixtures {
            guard let canonical else { continue }
            #expect(IPAddress(canonical) == IPAddress(text), "\(text)")
        }
    }

    @Test func bytesRoundTrip() throws {
        let v6 = try #require(IPAddress("2001:db8::ff00:42:8329"))
        #expect(v6.bytes.count == 16)
        #expect(IPAddress(bytes: v6.bytes) == v6)
        let v4 = try #require(IPAddress("10.20.30.40"))
        #expect(v4.bytes == [10, 20, 30, 40])
        #expect(IPAddress(bytes: [1, 2, 3]) == nil)
    }

    @Test func mappedForms() throws {
        let mapped = try #require(IPAddress("::ffff:127.0.0.1"))
        #expect(mapped.unmappedIPv4 == IPAddress("127.0.0.1"))
        #expect(IPAddress("127.0.0.1")?.mappedIPv6 == mapped)
        #expect(IPAddress("::1")?.unmappedIPv4 == nil)
        #expect(IPAddress("1.2.3.4")?.unmappedIPv4 == nil)
    }
}

@Suite struct NetworkRangeTests {
    /// Text → description, or the error.
    static let parsing: [(String, Result<String, NetworkRangeError>)] = [
        ("10.0.0.0/8", .success("10.0.0.0/8")),
        ("127.0.0.0/8", .success("127.0.0.0/8")),
        ("192.0.2.7", .success("192.0.2.7/32")),
        ("0.0.0.0/0", .success("0.0.0.0/0")),
        ("::1", .success("::1/128")),
        ("::1/128", .success("::1/128")),
        ("::/0", .success("::/0")),
        ("2001:DB8::/32", .success("2001:db8::/32")),
        ("fe80::/10", .success("fe80::/10")),
        ("10.1.2.3/8", .failure(.hostBitsSet("10.1.2.3/8", network: "10.0.0.0"))),
        ("2001:db8::1/64", .failure(.hostBitsSet("2001:db8::1/64", network: "2001:db8::"))),
        ("10.0.0.0/33", .failure(.invalidPrefixLength("10.0.0.0/33"))),
        ("::/129", .failure(.invalidPrefixLength("::/129"))),
        ("10.0.0.0/", .failure(.invalidPrefixLength("10.0.0.0/"))),
        ("10.0.0.0/-1", .failure(.invalidPrefixLength("10.0.0.0/-1"))),
        ("10.0.0.0/+8", .failure(.invalidPrefixLength("10.0.0.0/+8"))),
        ("10.0.0.0/8/8", .failure(.invalidPrefixLength("10.0.0.0/8/8"))),
        ("10.0.0/8", .failure(.invalidAddress("10.0.0/8"))),
        ("localhost", .failure(.invalidAddress("localhost"))),
        ("", .failure(.invalidAddress(""))),
    ]

    @Test(arguments: parsing)
    func parse(_ text: String, _ expected: Result<String, NetworkRangeError>) {
        let result = Result { () throws(NetworkRangeError) in try NetworkRange(text).description }
        #expect(result == expected)
    }

    /// Range, address, contained.
    static let containment: [(String, String, Bool)] = [
        ("127.0.0.0/8", "127.0.0.1", true),
        ("127.0.0.0/8", "127.255.255.255", true),
        ("127.0.0.0/8", "128.0.0.0", false),
        ("127.0.0.0/8", "126.255.255.255", false),
        ("127.0.0.0/8", "::ffff:127.0.0.1", true),
        ("127.0.0.0/8", "::ffff:10.0.0.1", false),
        ("127.0.0.0/8", "::1", false),
        ("127.0.0.0/8", "::127.0.0.1", false),
        ("0.0.0.0/0", "203.0.113.9", true),
        ("0.0.0.0/0", "::ffff:203.0.113.9", true),
        ("0.0.0.0/0", "2001:db8::1", false),
        ("192.0.2.7", "192.0.2.7", true),
        ("192.0.2.7", "192.0.2.8", false),
        ("192.0.2.0/31", "192.0.2.1", true),
        ("192.0.2.0/31", "192.0.2.2", false),
        ("::1/128", "::1", true),
        ("::1", "::2", false),
        ("::1/128", "127.0.0.1", false),
        ("::/0", "2001:db8::1", true),
        ("::/0", "10.0.0.1", true),
        ("2001:db8::/32", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", true),
        ("2001:db8::/32", "2001:db9::", false),
        ("2001:db8:0:0:8000::/65", "2001:db8::8000:0:0:1", true),
        ("2001:db8::/65", "2001:db8::8000:0:0:1", false),
        ("2001:db8::/64", "2001:db8::ffff:ffff:ffff:ffff", true),
        ("::ffff:0:0/96", "10.1.2.3", true),
        ("::ffff:10.0.0.0/104", "10.1.2.3", true),
        ("::ffff:10.0.0.0/104", "11.1.2.3", false),
    ]

    @Test(arguments: containment)
    func contains(_ range: String, _ address: String, _ expected: Bool) throws {
        let network = try NetworkRange(range)
        let ip = try #require(IPAddress(address))
        #expect(network.contains(ip) == expected)
    }
}
