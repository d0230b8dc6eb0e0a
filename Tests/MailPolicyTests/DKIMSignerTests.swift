import DNSClient
import Foundation
import NIOCore
import Testing

@testable import MailPolicy

@Suite struct DKIMSignerTests {
    static let message = Array(
        ("Received: from client.example by mx.example.test; Thu, 1 Jan 2026 00:00:00 +0000\r\n"
            + "From: Alice <alice@example.test>\r\n" + "To: Bob <bob@example.org>,\r\n Carol <carol@example.org>\r\n"
            + "Subject: A subject long enough to need folding somewhere along the way, surely\r\n"
            + "Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n" + "Message-ID: <round-trip@example.test>\r\n"
            + "X-Mailer: not signed\r\n" + "List-Unsubscribe: <mailto:leave@example.test>\r\n" + "\r\n"
            + "Hello Bob,  \r\n\r\nsee you\tat noon.\r\n\r\n\r\n").utf8)

    static let now = Date(timeIntervalSince1970: 1_767_225_600)

    /// Signs in chunks split at `splits`, returns the signed message.
    static func sign(
        _ message: [UInt8], key: DKIMKey, selector: String = "tern", splits: [Int] = [],
        headers: [String] = DKIMSigner.defaultSignedFields
    ) throws -> [UInt8] {
        let signer = DKIMSigner(domain: "Example.Test", selector: selector, key: key, headers: headers)
        var start = 0
        for split in splits + [message.count] {
            signer.append(ByteBuffer(bytes: message[start..<split]))
            start = split
        }
        return Array(try signer.signatureField(now: now).utf8) + message
    }

    static func resolver(_ key: DKIMKey, selector: String = "tern") -> KeyTable {
        KeyTable(["\(selector)._domainkey.example.test": [key.publicKeyRecord()]])
    }

    static func fixtureKey(_ name: String) throws -> DKIMKey {
        try DKIMKey(contentsOfFile: DKIMFixtures.directory.appendingPathComponent(name).path)
    }

    @Test(arguments: ["rsa2048.pem", "rsa2048-pkcs8.pem", "ed25519.pem"])
    func roundTrip(keyFile: String) async throws {
        let key = try Self.fixtureKey(keyFile)
        let signed = try Self.sign(Self.message, key: key, splits: [17, 300, 301])
        let results = await verifyDKIM(signed, resolver: Self.resolver(key), now: Self.now)
        #expect(results.map(\.result) == [.pass], "\(results.first?.reason ?? "")")
        #expect(results.first?.algorithm == key.algorithm.rawValue)
        #expect(results.first?.domain == "example.test")
        // The same message in other chunks gives the same field: signing is deterministic.
        #expect(try Self.sign(Self.message, key: key) == signed)
    }

    @Test(arguments: [DKIMKey.KeyType.ed25519, .rsa])
    func generatedKeysRoundTripThroughPEM(type: DKIMKey.KeyType) async throws {
        let key = try DKIMKey.generate(type)
        let reloaded = try DKIMKey(pemRepresentation: key.pemRepresentation)
        #expect(reloaded.publicKeyRecord() == key.publicKeyRecord())
        #expect(key.pemRepresentation.hasPrefix("-----BEGIN PRIVATE KEY-----\n"))
        let signed = try Self.sign(Self.message, key: reloaded)
        #expect(await verifyDKIM(signed, resolver: Self.resolver(key), now: Self.now).map(\.result) == [.pass])
        #expect(key.bits == (type == .rsa ? 2048 : 256))
    }

    @Test func fieldIsFoldedAndSignsThePresentFieldsWithFromOversigned() throws {
        let key = try Self.fixtureKey("ed25519.pem")
        let signer = DKIMSigner(domain: "example.test", selector: "tern", key: key)
        signer.append(ByteBuffer(bytes: Self.message))
        let field = try signer.signatureField(now: Self.now)
        #expect(field.hasSuffix("\r\n"))
        let lines = field.dropLast(2).components(separatedBy: "\r\n")
        #expect(lines.allSatisfy { $0.utf8.count <= 78 }, "\(lines)")
        #expect(lines.dropFirst().allSatisfy { $0.hasPrefix("\t") })
        let unfolded = field.replacingOccurrences(of: "\r\n\t", with: " ")
        #expect(unfolded.hasPrefix("DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d=example.test; s=tern;"))
        #expect(unfolded.contains(" t=1767225600;"))
        #expect(
            unfolded.replacingOccurrences(of: " :", with: ":").contains(
                " h=From:To:Subject:Date:Message-ID:List-Unsubscribe:From;"))
        // Asking again gives the same field.
        #expect(try signer.signatureField(now: Self.now) == field)
    }

    @Test func oversigningBlocksAnAddedFrom() async throws {
        let key = try Self.fixtureKey("ed25519.pem")
        let signed = try Self.sign(Self.message, key: key)
        let forged = replacing("\r\nDate:", with: "\r\nFrom: mallory@evil.test\r\nDate:", in: signed)
        let results = await verifyDKIM(forged, resolver: Self.resolver(key), now: Self.now)
        #expect(results.map(\.result) == [.fail])
        // An unsigned field may be added or changed.
        let relayed = replacing("X-Mailer: not signed", with: "X-Mailer: changed", in: signed)
        #expect(await verifyDKIM(relayed, resolver: Self.resolver(key), now: Self.now).map(\.result) == [.pass])
    }

    @Test(arguments: [
        "From: a@example.test\r\n\r\n",
        "From: a@example.test\r\n",
        "From: a@example.test\r\nFrom: b@example.test\r\nTo: c@example.org\r\n\r\nx",
        "\r\nbody without header\r\n",
        "",
    ])
    func unusualMessagesRoundTrip(text: String) async throws {
        let key = try Self.fixtureKey("ed25519.pem")
        let signed = try Self.sign(Array(text.utf8), key: key)
        #expect(await verifyDKIM(signed, resolver: Self.resolver(key), now: Self.now).map(\.result) == [.pass])
    }

    @Test func overlongHeaderIsRefused() throws {
        let signer = DKIMSigner(
            domain: "example.test", selector: "s", key: try Self.fixtureKey("ed25519.pem"), headerLimit: 50)
        signer.append(ByteBuffer(bytes: Self.message))
        #expect(throws: DKIMSigningError.headerTooLong(limit: 50)) { try signer.signatureField(now: Self.now) }
    }

    @Test func invalidNamesAndFieldNamesAreRefusedOrSkipped() throws {
        let key = try Self.fixtureKey("ed25519.pem")
        for (domain, selector) in [("example", "s"), ("example.test", "s;t"), ("exa mple.test", "s")] {
            let signer = DKIMSigner(domain: domain, selector: selector, key: key)
            signer.append(ByteBuffer(bytes: Self.message))
            #expect(throws: DKIMSigningError.self) { try signer.signatureField(now: Self.now) }
        }
        let signer = DKIMSigner(
            domain: "example.test", selector: "s", key: key, headers: ["To", "Bad:Name", "", "Sub ject"])
        signer.append(ByteBuffer(bytes: Self.message))
        let field = try signer.signatureField(now: Self.now).replacingOccurrences(of: "\r\n\t", with: "")
        #expect(field.contains("h=From:To:From;"))
    }

    /// The published record of the fixture keys is what make-fixtures.py computed with openssl.
    @Test func publicKeyRecordsMatchOpenSSL() throws {
        let records = try DKIMFixtures.records()
        #expect(try Self.fixtureKey("rsa2048.pem").publicKeyRecord() == records["s2048._domainkey.example.test"]?[0])
        #expect(
            try Self.fixtureKey("rsa2048-pkcs8.pem").publicKeyRecord() == records["s2048._domainkey.example.test"]?[0])
        #expect(try Self.fixtureKey("ed25519.pem").publicKeyRecord() == records["ed._domainkey.example.test"]?[0])
    }

    @Test func zoneFileRecordUsesStringsOf255OctetsAtMost() throws {
        let key = try Self.fixtureKey("rsa2048.pem")
        let zone = key.zoneFileRecord(selector: "s2026", domain: "example.test")
        #expect(zone.hasPrefix("s2026._domainkey.example.test. IN TXT ( \"v=DKIM1; k=rsa; \""))
        #expect(zone.hasSuffix("\" )"))
        let strings = zone.split(separator: "\"").enumerated().filter { $0.offset % 2 == 1 }.map(\.element)
        #expect(strings.count == 3)
        #expect(strings.allSatisfy { $0.utf8.count <= 255 })
        #expect(strings.joined() == key.publicKeyRecord())
    }

    @Test func unusableKeysAreRefusedClearly() throws {
        #expect(throws: DKIMKeyError.rsaTooSmall(bits: 1024)) { try Self.fixtureKey("rsa1024.pem") }
        #expect(throws: DKIMKeyError.rsaTooSmall(bits: 768)) { try Self.fixtureKey("rsa768.pem") }
        #expect(throws: DKIMKeyError.notPEM) { try DKIMKey(pemRepresentation: "hello") }
        #expect(throws: DKIMKeyError.encrypted) {
            try DKIMKey(
                pemRepresentation: "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")
        }
        #expect(throws: DKIMKeyError.unsupportedKeyType) {
            try DKIMKey(pemRepresentation: "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n")
        }
        // A P-256 key in PKCS#8 (RFC 5915 / 5208): the algorithm OID is id-ecPublicKey.
        let p256 = DKIMKeyEncoding.pem(label: "PRIVATE KEY", der: Array(P256PKCS8.der))
        #expect(throws: DKIMKeyError.unsupportedKeyType) { try DKIMKey(pemRepresentation: p256) }
        #expect(throws: DKIMKeyError.malformed("not a PKCS#8 private key")) {
            try DKIMKey(pemRepresentation: "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n")
        }
        #expect(throws: DKIMKeyError.rsaTooSmall(bits: 1024)) { try DKIMKey.generate(.rsa, bits: 1024) }
        #expect(throws: DKIMKeyError.rsaSizeUnsupported(bits: 8192)) { try DKIMKey.generate(.rsa, bits: 8192) }
        #expect(throws: DKIMKeyError.self) { try DKIMKey(contentsOfFile: "/nonexistent/key.pem") }
    }
}

/// A P-256 private key in PKCS#8, to show that other key types are refused.
private enum P256PKCS8 {
    static let der = Data(
        base64Encoded:
            "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg9hzSdWOnUFyR1swc3MQcaJ34D7/qTW2a1YBX6yWV/lChRANCAAS6j+175ZZnvewq3QgJG/OiqJVbxrefbpXFTbDbM0icRRSDsaJc5qiCY43xCLTgyrqEj/yjiuLO4Y2OCw0WY/yg"
    )!
}

/// dkimpy (Debian's python3-dkim) verifies what Tern signs. Skipped where it is not installed.
@Suite(.enabled(if: DKIMInterop.available)) struct DKIMInteropTests {
    @Test(arguments: ["rsa2048.pem", "ed25519.pem"])
    func dkimpyVerifiesTernSignatures(keyFile: String) throws {
        let key = try DKIMSignerTests.fixtureKey(keyFile)
        let signed = try DKIMSignerTests.sign(DKIMSignerTests.message, key: key)
        #expect(try DKIMInterop.dkimpyVerify(signed, record: key.publicKeyRecord()))
        let tampered = replacing("noon", with: "one", in: signed)
        #expect(try !DKIMInterop.dkimpyVerify(tampered, record: key.publicKeyRecord()))
    }
}

enum DKIMInterop {
    static let python = "/usr/bin/python3"
    static let available: Bool = (try? run(["-c", "import dkim, nacl"], input: [])) == 0

    static let script = """
        import sys, dkim
        record = sys.argv[1].encode()
        message = sys.stdin.buffer.read()
        ok = dkim.verify(message, dnsfunc=lambda name, timeout=5: record if name == b"tern._domainkey.example.test." else None)
        sys.exit(0 if ok else 1)
        """

    static func dkimpyVerify(_ message: [UInt8], record: String) throws -> Bool {
        try run(["-c", script, record], input: message) == 0
    }

    static func run(_ arguments: [String], input: [UInt8]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardInput = pipe
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        pipe.fileHandleForWriting.write(Data(input))
        try pipe.fileHandleForWriting.close()
        process.waitUntilExit()
        return process.terminationStatus
    }
}
