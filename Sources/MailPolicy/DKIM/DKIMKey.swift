import Crypto
import Foundation
import _CryptoExtras

/// A private key Tern signs mail with (RFC 6376 §3.3): RSA of 2048 bits or more, or Ed25519
/// (RFC 8463). Loaded from PEM: PKCS#1 `RSA PRIVATE KEY`, or PKCS#8 `PRIVATE KEY` holding an
/// RSA or Ed25519 key (as `openssl genpkey` writes them). Encrypted keys are not supported.
public struct DKIMKey: Sendable {
    /// The key type, named as in the key record's `k=` tag (RFC 6376 §3.6.1, RFC 8463 §4).
    public enum KeyType: String, Sendable, Hashable, CaseIterable {
        case rsa
        case ed25519
    }

    /// RFC 8301 §3.2: signers MUST use at least 1024 bits and SHOULD use 2048; Tern insists on
    /// 2048, the size receivers no longer call weak.
    public static let minimumRSABits = 2048
    /// Generating more than this is refused: the record would outgrow what resolvers carry well.
    public static let maximumRSABits = 4096

    private enum Storage: Sendable {
        case rsa(_RSA.Signing.PrivateKey)
        /// The 32-octet seed: swift-crypto's Ed25519 key type is not Sendable.
        case ed25519(Data)
    }

    private let storage: Storage

    /// The key type.
    public var keyType: KeyType {
        switch storage {
        case .rsa: .rsa
        case .ed25519: .ed25519
        }
    }

    /// The signature algorithm of the `a=` tag this key signs with.
    public var algorithm: DKIMSignature.Algorithm {
        switch storage {
        case .rsa: .rsaSHA256
        case .ed25519: .ed25519SHA256
        }
    }

    /// Bits of the RSA modulus; 256 for Ed25519.
    public var bits: Int {
        switch storage {
        case .rsa(let key): key.keySizeInBits
        case .ed25519: 256
        }
    }

    /// Reads a PEM private key.
    public init(pemRepresentation text: String) throws(DKIMKeyError) {
        guard let (label, der) = DKIMKeyEncoding.pem(text) else { throw .notPEM }
        switch label {
        case "RSA PRIVATE KEY":
            storage = .rsa(try Self.rsa(der: der, pkcs1: der))
        case "PRIVATE KEY":
            guard let (algorithm, privateKey) = DKIMKeyEncoding.pkcs8(der) else {
                throw .malformed("not a PKCS#8 private key")
            }
            if algorithm == DERReader.rsaEncryption {
                storage = .rsa(try Self.rsa(der: der, pkcs1: privateKey))
            } else if algorithm == DERReader.ed25519 {
                guard let seed = DKIMKeyEncoding.ed25519Seed(privateKey: privateKey),
                    (try? Curve25519.Signing.PrivateKey(rawRepresentation: seed)) != nil
                else { throw .malformed("not an Ed25519 private key") }
                storage = .ed25519(Data(seed))
            } else {
                throw .unsupportedKeyType
            }
        case "ENCRYPTED PRIVATE KEY":
            throw .encrypted
        default:
            throw label.hasSuffix("PRIVATE KEY") ? .unsupportedKeyType : .notPEM
        }
    }

    /// Reads a PEM private key file.
    public init(contentsOfFile path: String) throws(DKIMKeyError) {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw .unreadable(path: path, reason: "\(error.localizedDescription)")
        }
        try self.init(pemRepresentation: text)
    }

    /// A new random key; `bits` applies to RSA only (2048 to 4096).
    public static func generate(_ type: KeyType, bits: Int = 2048) throws(DKIMKeyError) -> DKIMKey {
        switch type {
        case .rsa:
            guard bits >= minimumRSABits else { throw .rsaTooSmall(bits: bits) }
            guard bits <= maximumRSABits, bits % 8 == 0 else { throw .rsaSizeUnsupported(bits: bits) }
            do {
                return DKIMKey(storage: .rsa(try _RSA.Signing.PrivateKey(keySize: .init(bitCount: bits))))
            } catch {
                throw .malformed("RSA key generation failed: \(error)")
            }
        case .ed25519:
            return DKIMKey(storage: .ed25519(Curve25519.Signing.PrivateKey().rawRepresentation))
        }
    }

    private init(storage: Storage) {
        self.storage = storage
    }

    private static func rsa(der: [UInt8], pkcs1: [UInt8]) throws(DKIMKeyError) -> _RSA.Signing.PrivateKey {
        guard let bits = DKIMKeyEncoding.rsaPrivateKeyBits(pkcs1: pkcs1) else {
            throw .malformed("not an RSA private key")
        }
        guard bits >= minimumRSABits else { throw .rsaTooSmall(bits: bits) }
        do {
            return try _RSA.Signing.PrivateKey(derRepresentation: der)
        } catch {
            throw .malformed("not an RSA private key")
        }
    }

    /// The private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), for both key types.
    public var pemRepresentation: String {
        switch storage {
        case .rsa(let key):
            return key.pkcs8PEMRepresentation
        case .ed25519(let seed):
            let der = DKIMKeyEncoding.ed25519PKCS8(seed: Array(seed))
            return DKIMKeyEncoding.pem(label: "PRIVATE KEY", der: der)
        }
    }

    /// The `p=` value: base64 of the SubjectPublicKeyInfo for RSA (what `opendkim-genkey`
    /// publishes and every verifier reads), of the raw 32-octet key for Ed25519 (RFC 8463 §4).
    public var publicKeyBase64: String {
        switch storage {
        case .rsa(let key): key.publicKey.derRepresentation.base64EncodedString()
        case .ed25519(let seed):
            // The seed was checked when the key was made.
            try! Curve25519.Signing.PrivateKey(rawRepresentation: seed).publicKey.rawRepresentation
                .base64EncodedString()
        }
    }

    /// The key record to publish at `<selector>._domainkey.<domain>` (RFC 6376 §3.6.1).
    public func publicKeyRecord() -> String {
        "v=DKIM1; k=\(keyType.rawValue); p=\(publicKeyBase64)"
    }

    /// The key record in zone-file form, its text cut into character-strings of at most 255
    /// octets (RFC 1035 §3.3.14; RFC 6376 §3.6.2.2 has verifiers join them).
    public func zoneFileRecord(selector: String, domain: String) -> String {
        var strings = ["v=DKIM1; k=\(keyType.rawValue); "]
        var rest = Substring("p=" + publicKeyBase64)
        while !rest.isEmpty {
            strings.append(String(rest.prefix(250)))
            rest = rest.dropFirst(250)
        }
        let quoted = strings.map { "\"\($0)\"" }.joined(separator: "\n\t")
        return "\(selector)._domainkey.\(domain). IN TXT ( \(quoted) )"
    }

    /// Signs the SHA-256 of the header data: RSASSA-PKCS1-v1_5 (RFC 6376 §3.3.1), or PureEdDSA
    /// over the 32 octets of the hash (RFC 8463 §3).
    func sign(_ digest: SHA256.Digest) throws(DKIMKeyError) -> [UInt8] {
        do {
            switch storage {
            case .rsa(let key):
                return Array(try key.signature(for: digest, padding: .insecurePKCS1v1_5).rawRepresentation)
            case .ed25519(let seed):
                return Array(try Curve25519.Signing.PrivateKey(rawRepresentation: seed).signature(for: Data(digest)))
            }
        } catch {
            throw .malformed("signing failed: \(error)")
        }
    }
}

/// Why a key cannot be used for signing.
public enum DKIMKeyError: Error, Sendable, Hashable, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case notPEM
    case encrypted
    case unsupportedKeyType
    case rsaTooSmall(bits: Int)
    case rsaSizeUnsupported(bits: Int)
    case malformed(String)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason): "cannot read \(path): \(reason)"
        case .notPEM: "not a PEM private key (expected -----BEGIN PRIVATE KEY----- or RSA PRIVATE KEY)"
        case .encrypted: "the private key is encrypted; DKIM keys must be stored unencrypted (mode 0600)"
        case .unsupportedKeyType: "unsupported key type: DKIM signs with RSA or Ed25519 keys"
        case .rsaTooSmall(let bits):
            "RSA key of \(bits) bits is too small: DKIM signing keys need at least \(DKIMKey.minimumRSABits) bits"
        case .rsaSizeUnsupported(let bits):
            "RSA keys of \(bits) bits are not generated: choose 2048, 3072 or 4096"
        case .malformed(let reason): reason
        }
    }
}
