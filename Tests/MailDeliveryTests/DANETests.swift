import DNSClient
import Foundation
import Testing

@testable import MailDelivery

/// A self-signed P-256 certificate for mx.dane.test, valid until 2126, and what openssl says
/// of it (`openssl x509 -pubkey | openssl pkey -pubin -outform DER | openssl dgst`).
enum DANEFixture {
    /// Shared with TernServiceTests through the file (test targets share no code).
    static let pem = try! String(
        contentsOfFile: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../Fixtures/dane-self-signed.pem").path,
        encoding: .utf8)
    static let spki = hex(
        "3059301306072a8648ce3d020106082a8648ce3d030107034200042e796411891d9658e070b430dfa9096d976b6bfe5f36f3897a18c8c15e7c3da795b1a12c66267f374d9f688f92fd9fd388476719edf26c724e32ef43228eab3f"
    )
    static let spkiSHA256 = hex("882261e3a2bc386c51de7eacaae4d11f4114e7e85d8345472fb532b74275dfa8")
    static let spkiSHA512 = hex(
        "397ba6879d64630f1d8fce66f184b4131d58e7163e6184fbbf859fcff0ed53f61a79dd5acc7cbeed984fe8e08eb658dc1517d89c71c19c1d2bd1d236391464ea"
    )
    static let certificateSHA256 = hex("f68ccb6953010cef0fe474108b72ca19dbc7e77a78aca7a7d4fc8a775e6586a3")
    static let certificateSHA512 = hex(
        "b800cedd883a902828e5e7dcbae512db6b1f8f8dbe44a34b9b0a435e58a80d0a636f73ce7ff7d5357931cdd13b1e6634ba9ba91d4dcec9c3e0607038b9220617"
    )

    static var der: [UInt8] {
        let body = pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        return Array(Data(base64Encoded: body)!)
    }

    static func hex(_ text: String) -> [UInt8] {
        var bytes: [UInt8] = []
        var index = text.startIndex
        while index < text.endIndex {
            let next = text.index(index, offsetBy: 2)
            bytes.append(UInt8(text[index..<next], radix: 16)!)
            index = next
        }
        return bytes
    }
}

private func tlsa(_ usage: UInt8, _ selector: UInt8, _ matching: UInt8, _ data: [UInt8]) -> TLSARecord {
    TLSARecord(usage: usage, selector: selector, matchingType: matching, data: data)
}

@Suite struct DANETests {
    @Test func subjectPublicKeyInfoIsCutFromTheCertificateAsIs() {
        #expect(DANE.subjectPublicKeyInfo(certificate: DANEFixture.der) == DANEFixture.spki)
        #expect(DANE.subjectPublicKeyInfo(certificate: Array(DANEFixture.der.prefix(40))) == nil)
        #expect(DANE.subjectPublicKeyInfo(certificate: []) == nil)
        #expect(DANE.subjectPublicKeyInfo(certificate: [0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]) == nil)
    }

    /// (record, matches the fixture): every selector and matching type, right and wrong data.
    static let matching: [(TLSARecord, Bool)] = [
        (tlsa(3, 1, 1, DANEFixture.spkiSHA256), true),
        (tlsa(3, 1, 2, DANEFixture.spkiSHA512), true),
        (tlsa(3, 1, 0, DANEFixture.spki), true),
        (tlsa(3, 0, 1, DANEFixture.certificateSHA256), true),
        (tlsa(3, 0, 2, DANEFixture.certificateSHA512), true),
        (tlsa(3, 0, 0, DANEFixture.der), true),
        (tlsa(3, 1, 1, DANEFixture.certificateSHA256), false),
        (tlsa(3, 0, 1, DANEFixture.spkiSHA256), false),
        (tlsa(3, 1, 2, DANEFixture.spkiSHA256), false),
        (tlsa(3, 1, 1, [UInt8](repeating: 0xAB, count: 32)), false),
        (tlsa(3, 2, 1, DANEFixture.spkiSHA256), false),
        (tlsa(3, 1, 3, DANEFixture.spkiSHA256), false),
    ]

    @Test(arguments: matching)
    func matches(_ record: TLSARecord, _ expected: Bool) {
        #expect(
            DANE.matches(record, certificate: DANEFixture.der, subjectPublicKeyInfo: DANEFixture.spki) == expected)
    }

    /// (record, usable by an SMTP client, RFC 7672 §3.1).
    static let usability: [(TLSARecord, Bool)] = [
        (tlsa(3, 1, 1, [UInt8](repeating: 1, count: 32)), true),
        (tlsa(2, 0, 2, [UInt8](repeating: 1, count: 64)), true),
        (tlsa(3, 0, 0, [1, 2, 3]), true),
        (tlsa(0, 1, 1, [UInt8](repeating: 1, count: 32)), false),
        (tlsa(1, 1, 1, [UInt8](repeating: 1, count: 32)), false),
        (tlsa(4, 1, 1, [UInt8](repeating: 1, count: 32)), false),
        (tlsa(3, 2, 1, [UInt8](repeating: 1, count: 32)), false),
        (tlsa(3, 1, 3, [UInt8](repeating: 1, count: 32)), false),
        (tlsa(3, 1, 1, [UInt8](repeating: 1, count: 31)), false),
        (tlsa(3, 1, 2, [UInt8](repeating: 1, count: 32)), false),
        (tlsa(3, 1, 0, []), false),
    ]

    @Test(arguments: usability)
    func usable(_ record: TLSARecord, _ expected: Bool) {
        #expect(DANE.usable([record]) == (expected ? [record] : []))
    }

    @Test func tlsaName() {
        #expect(DANE.tlsaName(host: "mx1.example.com", port: 25) == "_25._tcp.mx1.example.com")
    }

    @Test func daneEEVerifiesWithoutNameOrDateOrRoot() async {
        let verifier = CertificateVerifier(anchors: TrustAnchors([]))
        let chain = [DANEFixture.der]
        let good = await verifier.verifyDANE(
            chain: chain, records: [tlsa(3, 1, 1, DANEFixture.spkiSHA256)], hostName: "another.name.test")
        #expect(good == .verified(.daneEE))
        let bad = await verifier.verifyDANE(
            chain: chain, records: [tlsa(3, 1, 1, [UInt8](repeating: 0, count: 32))], hostName: "mx.dane.test")
        #expect(bad == .untrusted("no TLSA record matches the certificate chain"))
        // The same self-signed certificate as a DANE-TA: it is its own anchor, and the name counts.
        let anchored = await verifier.verifyDANE(
            chain: chain, records: [tlsa(2, 0, 1, DANEFixture.certificateSHA256)], hostName: "mx.dane.test")
        #expect(anchored == .verified(.daneTA))
        let misnamed = await verifier.verifyDANE(
            chain: chain, records: [tlsa(2, 0, 1, DANEFixture.certificateSHA256)], hostName: "other.test")
        #expect(misnamed == .untrusted("DANE-TA: certificate does not name the host"))
    }

    @Test func pkixTrustsOnlyWhatChainsToAnAnchorAndNamesTheHost() async throws {
        let certificate = try #require(try TrustAnchors.certificates(pem: DANEFixture.pem).first)
        let chain = [DANEFixture.der]
        let untrusted = await CertificateVerifier(anchors: TrustAnchors([])).verifyPKIX(
            chain: chain, hostName: "mx.dane.test")
        #expect(untrusted == .untrusted("self-signed certificate"))
        let trusting = CertificateVerifier(anchors: TrustAnchors([certificate]))
        #expect(await trusting.verifyPKIX(chain: chain, hostName: "MX.dane.test") == .verified(.pkix))
        #expect(
            await trusting.verifyPKIX(chain: chain, hostName: "mx.other.test")
                == .untrusted("certificate does not name the host"))
        let later = Date(timeIntervalSince1970: 5_000_000_000)
        #expect(
            await trusting.verifyPKIX(chain: chain, hostName: "mx.dane.test", now: later)
                == .untrusted("certificate has expired"))
        #expect(
            await trusting.verifyPKIX(chain: [[0x30, 0x00]], hostName: "mx.dane.test")
                == .untrusted("a certificate of the chain does not parse"))
        #expect(await trusting.verifyPKIX(chain: [], hostName: "x") == .untrusted("no certificate presented"))
    }

    @Test func verdictDescriptions() {
        #expect(CertificateVerdict.verified(.pkix).description == "verified")
        #expect(CertificateVerdict.verified(.daneEE).description == "verified (DANE-EE)")
        #expect(CertificateVerdict.untrusted("x").description == "untrusted (x)")
    }
}
