import Foundation
import MailDelivery
import Testing

@testable import TernService

@Suite struct OutboundTLSConfigurationTests {
    @Test func defaults() throws {
        let outbound = try parsed("").outboundTLS
        #expect(outbound.policies.isEmpty && outbound.caFile == nil)
        #expect(outbound.dane && outbound.mtaSTS && outbound.mtaSTSPort == 443)
        #expect(outbound.mtaSTSFetchTimeout == .seconds(10))
        #expect(outbound.tlsReporting == TernConfiguration.TLSReporting())
        #expect(outbound.tlsReporting.enabled && outbound.tlsReporting.period == .seconds(86400))
    }

    @Test func tlsReportingKeys() throws {
        let reporting = try parsed(
            """
            [tls_rpt]
            enabled = false
            organization = "Example Mail"
            contact = "tls-reports@example.org"
            period = "5s"
            https_port = 8443
            upload_timeout = "7s"
            """
        ).outboundTLS.tlsReporting
        #expect(!reporting.enabled && reporting.organization == "Example Mail")
        #expect(reporting.contact == "tls-reports@example.org" && reporting.period == .seconds(5))
        #expect(reporting.httpsPort == 8443 && reporting.uploadTimeout == .seconds(7))
    }

    @Test func everyKey() throws {
        let folder = "/tmp/tern-tls-config-\(UInt32.random(in: 0...UInt32.max))"
        try #require(mkdirForTest(folder))
        try #require(writeForTest("\(folder)/ca.pem", DANEFixturePEM.text))
        let outbound = try TernConfiguration.parse(
            """
            [delivery]
            tls_ca_file = "ca.pem"

            [tls_policy]
            "Example.COM" = "verify"
            ".example.net" = "encrypt"
            "bank.example" = "dane"
            "old.example" = "none"
            "x.example." = "may"

            [mta_sts]
            enabled = false
            https_port = 8443
            fetch_timeout = "3s"

            [dane]
            enabled = false
            """, baseDirectory: folder
        ).outboundTLS
        #expect(outbound.caFile == "\(folder)/ca.pem")
        #expect(
            outbound.policies == [
                "example.com": .verify, ".example.net": .encrypt, "bank.example": .dane,
                "old.example": TLSSecurityLevel.none,
                "x.example": .may,
            ])
        #expect(!outbound.mtaSTS && outbound.mtaSTSPort == 8443 && outbound.mtaSTSFetchTimeout == .seconds(3))
        #expect(!outbound.dane)
    }

    /// Each bad value is named with its key and line; unknown keys stay errors.
    static let fixtures: [(String, String)] = [
        (
            "[tls_policy]\n\"example.com\" = \"verfy\"\n",
            "line 2: tls_policy.example.com: \"verfy\": expected \"none\", \"may\", \"encrypt\", \"verify\" or \"dane\""
        ),
        (
            "[tls_policy]\n\"exa mple.com\" = \"may\"\n",
            "line 2: tls_policy.exa mple.com: \"exa mple.com\" is not a domain name (or .domain for its subdomains)"
        ),
        ("[tls_policy]\n\"example.com\" = true\n", "line 2: tls_policy.example.com: expected a string"),
        (
            "[tls_policy]\n\"example.com\" = \"may\"\n\"EXAMPLE.com\" = \"none\"\n",
            "line 3: tls_policy.EXAMPLE.com: duplicate entry for \"example.com\""
        ),
        ("tls_policy = \"verify\"\n", "line 1: tls_policy: expected a table ([tls_policy])"),
        ("[mta_sts]\nhttps_port = 0\n", "line 2: mta_sts.https_port: must be a port number from 1 to 65535"),
        ("[mta_sts]\nfetch_timeout = \"0s\"\n", "line 2: mta_sts.fetch_timeout: must be longer than 0s"),
        ("[mta_sts]\nenabled = \"yes\"\n", "line 2: mta_sts.enabled: expected true or false"),
        ("[mta_sts]\nport = 443\n", "line 2: mta_sts.port: unknown key"),
        ("[dane]\nenable = true\n", "line 2: dane.enable: unknown key"),
        ("[tls_rpt]\nrua = \"x\"\n", "line 2: tls_rpt.rua: unknown key"),
        ("[tls_rpt]\nhttps_port = 0\n", "line 2: tls_rpt.https_port: must be a port number from 1 to 65535"),
        ("[tls_rpt]\nperiod = \"0s\"\n", "line 2: tls_rpt.period: must be longer than 0s"),
        ("[tls_rpt]\nupload_timeout = \"0s\"\n", "line 2: tls_rpt.upload_timeout: must be longer than 0s"),
        (
            "[tls_rpt]\ncontact = \"nobody\"\n",
            "line 2: tls_rpt.contact: \"nobody\": expected an address such as tls-reports@example.org"
        ),
        (
            "[tls_rpt]\norganization = \"\"\n",
            "line 2: tls_rpt.organization: must be a name of 1 to 200 printable characters"
        ),
        (
            "[delivery]\ntls_ca_file = \"/nonexistent/ca.pem\"\n",
            "line 2: delivery.tls_ca_file: cannot read /nonexistent/ca.pem: The file “ca.pem” couldn’t be opened because there is no such file in the directory."
        ),
    ]

    @Test(arguments: fixtures)
    func problem(_ text: String, _ expected: String) {
        let found = problems(text)
        #expect(found.count == 1 && found.first?.hasPrefix(String(expected.prefix(40))) == true, "\(found)")
        if !expected.contains("cannot read") { #expect(found == [expected]) }
    }

    @Test func aCAFileWithoutCertificatesIsAnError() throws {
        let folder = "/tmp/tern-tls-config-\(UInt32.random(in: 0...UInt32.max))"
        try #require(mkdirForTest(folder))
        try #require(writeForTest("\(folder)/empty.pem", "not a certificate\n"))
        let found = problems("[delivery]\ntls_ca_file = \"\(folder)/empty.pem\"\n")
        #expect(found == ["line 2: delivery.tls_ca_file: \(folder)/empty.pem holds no PEM certificate"])
    }
}

/// A certificate for the CA-file tests (the one of MailDeliveryTests' DANE fixture).
enum DANEFixturePEM {
    static let text = try! String(
        contentsOfFile: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../Fixtures/dane-self-signed.pem").path,
        encoding: .utf8)
}
