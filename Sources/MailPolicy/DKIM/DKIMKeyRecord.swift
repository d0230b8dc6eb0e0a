import MailMessage

/// A DKIM key record as published at `<selector>._domainkey.<domain>` (RFC 6376 §3.6.1).
public struct DKIMKeyRecord: Sendable, Hashable {
    /// `k=`; `rsa` when absent.
    public var keyType: DKIMKey.KeyType
    /// `p=`, decoded; empty when the key has been revoked.
    public var publicKey: [UInt8]
    /// `h=`: the hash algorithms the key may be used with; nil (all) when absent.
    public var hashAlgorithms: [String]?
    /// `s=`: the service types; `*` (all) when absent.
    public var serviceTypes: [String]
    /// `t=y`: the domain is testing DKIM (§3.6.1); verifiers report it but judge as usual.
    public var isTesting: Bool
    /// `t=s`: the `i=` domain must be `d=` itself, not a subdomain.
    public var isStrict: Bool

    /// A revoked key (§3.6.1 p=: "An empty value means that this public key has been revoked").
    public var isRevoked: Bool { publicKey.isEmpty }

    /// Parses the text of one TXT record (its strings already joined, §3.6.2.2).
    public init(parsing text: String) throws(DKIMSignatureError) {
        let tags: DKIMTagList
        do {
            tags = try DKIMTagList(parsing: Array(text.utf8))
        } catch {
            throw DKIMSignatureError("malformed key record: \(error.reason)")
        }
        // §3.6.1 v=: optional, but when present it "MUST be the first tag in the record".
        if let version = tags["v"] {
            guard tags.tags.first?.name == "v", version == "DKIM1" else {
                throw DKIMSignatureError("key record version is not DKIM1")
            }
        }
        let type = tags["k"] ?? "rsa"
        guard let keyType = DKIMKey.KeyType(rawValue: type.lowercased()) else {
            throw DKIMSignatureError("unsupported key type k=\(type)")
        }
        self.keyType = keyType
        guard let key = tags["p"] else { throw DKIMSignatureError("key record has no p= tag") }
        guard let publicKey = key.isEmpty ? [] : DKIMSignature.base64(key), key.isEmpty || !publicKey.isEmpty else {
            throw DKIMSignatureError("key record p= is not base64")
        }
        self.publicKey = publicKey
        hashAlgorithms = tags["h"].map(Self.list)
        serviceTypes = tags["s"].map(Self.list) ?? ["*"]
        // §3.6.1 t=: unknown flags MUST be ignored.
        let flags = tags["t"].map(Self.list) ?? []
        isTesting = flags.contains("y")
        isStrict = flags.contains("s")
    }

    /// Whether this key may verify `signature`, or why not (§6.1.2).
    public func check(_ signature: DKIMSignature) -> String? {
        guard keyType == signature.algorithm.keyType else {
            return "key type k=\(keyType.rawValue) does not match a=\(signature.algorithm.rawValue)"
        }
        if let hashAlgorithms, !hashAlgorithms.contains("sha256") {
            return "key does not allow sha256 (h=\(hashAlgorithms.joined(separator: ":")))"
        }
        guard serviceTypes.contains("*") || serviceTypes.contains("email") else {
            return "key is not for email (s=\(serviceTypes.joined(separator: ":")))"
        }
        if isStrict {
            let at = signature.identity.lastIndex(of: "@")!
            guard signature.identity[signature.identity.index(after: at)...].lowercased() == signature.domain else {
                return "key forbids an i= subdomain of d= (t=s)"
            }
        }
        return nil
    }

    /// A colon-separated list, whitespace removed, lower-cased, empty items dropped.
    private static func list(_ value: String) -> [String] {
        value.split(separator: ":").map { DKIMTagList.removingWhitespace(String($0)).lowercased() }.filter {
            !$0.isEmpty
        }
    }
}
