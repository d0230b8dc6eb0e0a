import Foundation

/// Just enough DER (ITU-T X.690) to read the key structures DKIM meets: the algorithm of a
/// PKCS#8 key, the modulus size of an RSA key, the seed of an Ed25519 key. Every read is
/// bounds-checked; a malformed structure gives nil, never a trap.
struct DERReader {
    private let octets: [UInt8]
    private var index: Int
    private let end: Int

    init(_ octets: [UInt8]) {
        self.octets = octets
        self.index = 0
        self.end = octets.count
    }

    private init(_ octets: [UInt8], _ range: Range<Int>) {
        self.octets = octets
        self.index = range.lowerBound
        self.end = range.upperBound
    }

    var isAtEnd: Bool { index >= end }

    /// The next element: its tag and a reader over its contents.
    mutating func read() -> (tag: UInt8, contents: DERReader)? {
        guard index + 2 <= end else { return nil }
        let tag = octets[index]
        var length = Int(octets[index + 1])
        var cursor = index + 2
        if length & 0x80 != 0 {
            let count = length & 0x7F
            guard count >= 1, count <= 3, cursor + count <= end else { return nil }
            length = 0
            for _ in 0..<count {
                length = length << 8 | Int(octets[cursor])
                cursor += 1
            }
        }
        guard length <= end - cursor else { return nil }
        index = cursor + length
        return (tag, DERReader(octets, cursor..<cursor + length))
    }

    /// The next element if it has `tag`.
    mutating func read(_ tag: UInt8) -> DERReader? {
        var copy = self
        guard let element = copy.read(), element.tag == tag else { return nil }
        self = copy
        return element.contents
    }

    /// The contents as octets.
    var contents: [UInt8] { Array(octets[index..<end]) }

    static let sequence: UInt8 = 0x30
    static let integer: UInt8 = 0x02
    static let bitString: UInt8 = 0x03
    static let octetString: UInt8 = 0x04
    static let objectIdentifier: UInt8 = 0x06
    static let null: UInt8 = 0x05

    /// 1.2.840.113549.1.1.1 rsaEncryption (RFC 8017 Appendix C).
    static let rsaEncryption: [UInt8] = [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01]
    /// 1.3.101.112 id-Ed25519 (RFC 8410 §3).
    static let ed25519: [UInt8] = [0x2B, 0x65, 0x70]

    /// Bits of an unsigned big-endian integer's value.
    static func bitLength(_ integer: [UInt8]) -> Int {
        guard let first = integer.firstIndex(where: { $0 != 0 }) else { return 0 }
        return (integer.count - first) * 8 - integer[first].leadingZeroBitCount
    }
}

/// Key structures as DKIM uses them.
enum DKIMKeyEncoding {
    /// The algorithm OID and the key octets of a PKCS#8 PrivateKeyInfo (RFC 5208 §5):
    ///     PrivateKeyInfo ::= SEQUENCE { version, privateKeyAlgorithm AlgorithmIdentifier,
    ///                                   privateKey OCTET STRING, ... }
    static func pkcs8(_ der: [UInt8]) -> (algorithm: [UInt8], privateKey: [UInt8])? {
        var outer = DERReader(der)
        guard var info = outer.read(DERReader.sequence), info.read(DERReader.integer) != nil,
            var algorithm = info.read(DERReader.sequence),
            let oid = algorithm.read(DERReader.objectIdentifier),
            let key = info.read(DERReader.octetString)
        else { return nil }
        return (oid.contents, key.contents)
    }

    /// The modulus size of an RSA private key in PKCS#1 form (RFC 8017 §A.1.2):
    ///     RSAPrivateKey ::= SEQUENCE { version, modulus INTEGER, ... }
    static func rsaPrivateKeyBits(pkcs1 der: [UInt8]) -> Int? {
        var outer = DERReader(der)
        guard var key = outer.read(DERReader.sequence), key.read(DERReader.integer) != nil,
            let modulus = key.read(DERReader.integer)
        else { return nil }
        return DERReader.bitLength(modulus.contents)
    }

    /// The modulus size of an RSA public key, in SubjectPublicKeyInfo form (RFC 5280 §4.1) as
    /// usually published, or as a bare PKCS#1 RSAPublicKey (RFC 8017 §A.1.1) as RFC 6376 §3.6.1
    /// literally says: `SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
    static func rsaPublicKeyBits(_ der: [UInt8]) -> Int? {
        var outer = DERReader(der)
        guard var sequence = outer.read(DERReader.sequence), outer.isAtEnd else { return nil }
        if let modulus = sequence.read(DERReader.integer) {
            return DERReader.bitLength(modulus.contents)
        }
        guard var algorithm = sequence.read(DERReader.sequence),
            algorithm.read(DERReader.objectIdentifier)?.contents == DERReader.rsaEncryption,
            let bits = sequence.read(DERReader.bitString)
        else { return nil }
        let wrapped = bits.contents
        guard wrapped.first == 0 else { return nil }  // no unused bits
        var inner = DERReader(Array(wrapped.dropFirst()))
        guard var key = inner.read(DERReader.sequence), let modulus = key.read(DERReader.integer) else { return nil }
        return DERReader.bitLength(modulus.contents)
    }

    /// The 32-octet seed of an Ed25519 private key (RFC 8410 §7): the PKCS#8 privateKey is an
    /// OCTET STRING holding `CurvePrivateKey ::= OCTET STRING`.
    static func ed25519Seed(privateKey: [UInt8]) -> [UInt8]? {
        var outer = DERReader(privateKey)
        guard let seed = outer.read(DERReader.octetString), outer.isAtEnd, seed.contents.count == 32 else {
            return nil
        }
        return seed.contents
    }

    /// PKCS#8 for an Ed25519 seed, as `openssl genpkey -algorithm ed25519` writes it.
    static func ed25519PKCS8(seed: [UInt8]) -> [UInt8] {
        [0x30, 0x2E, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20] + seed
    }

    /// The label and contents of the first PEM block (RFC 7468 §2).
    static func pem(_ text: String) -> (label: String, der: [UInt8])? {
        var label: String?
        var base64 = ""
        for line in text.split(whereSeparator: \.isNewline) {
            let line = line.trimmingCharacters(in: .whitespaces)
            if let current = label {
                if line == "-----END \(current)-----" {
                    guard let der = Data(base64Encoded: base64) else { return nil }
                    return (current, Array(der))
                }
                if line.contains(":") { continue }  // RFC 1421 headers (Proc-Type) of encrypted PEM
                base64 += line
            } else if line.hasPrefix("-----BEGIN "), line.hasSuffix("-----"), line.count > 16 {
                label = String(line.dropFirst(11).dropLast(5))
            }
        }
        return nil
    }

    /// A PEM block, 64 characters a line (RFC 7468 §2).
    static func pem(label: String, der: [UInt8]) -> String {
        let base64 = Data(der).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
        return "-----BEGIN \(label)-----\n\(base64)\n-----END \(label)-----\n"
    }
}
