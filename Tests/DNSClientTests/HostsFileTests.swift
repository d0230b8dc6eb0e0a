import Testing

@testable import DNSClient

@Suite struct HostsFileTests {
    let hosts = HostsFile(
        contents: """
            # comment line
            127.0.0.1\tlocalhost  loghost # trailing comment
            ::1 localhost ip6-localhost
            192.0.2.10 Mail.Example.TEST mail
            0:0:0:0:0:0:0:2 two.example.test
            not-an-address ignored.example
            192.0.2.11
            """)

    @Test func namesForAddressesCanonicalNameFirst() {
        #expect(hosts.names(for: "127.0.0.1") == ["localhost", "loghost"])
        #expect(hosts.names(for: "::1") == ["localhost", "ip6-localhost"])
        #expect(hosts.names(for: "0:0:0:0:0:0:0:1") == ["localhost", "ip6-localhost"])
        #expect(hosts.names(for: "::2") == ["two.example.test"])
        #expect(hosts.names(for: "192.0.2.10") == ["mail.example.test", "mail"])
        #expect(hosts.names(for: "192.0.2.11").isEmpty)
        #expect(hosts.names(for: "192.0.2.99").isEmpty)
        #expect(hosts.names(for: "junk").isEmpty)
    }

    @Test func addressesForNamesIgnoreCaseAndTrailingDot() {
        #expect(hosts.addresses(for: "LOCALHOST.") == ["127.0.0.1", "::1"])
        #expect(hosts.addresses(for: "mail") == ["192.0.2.10"])
        #expect(hosts.addresses(for: "ignored.example").isEmpty)
    }

    @Test func missingFileIsEmpty() {
        #expect(HostsFile(path: "/nonexistent/hosts").names(for: "127.0.0.1").isEmpty)
    }
}
