import Foundation
import MailMessage

/// A parsed and validated `DKIM-Signature:` field (RFC 6376 §3.5, checked as §6.1.1 asks).
public struct DKIMSignature: Sendable, Hashable {
    /// The `a=` algorithms Tern verifies and signs with.
    public enum Algorithm: String, Sendable, Hashable, CaseIterable {
        /// RFC 6376 §3.3.1.
        case rsaSHA256 = "rsa-sha256"
        /// RFC 8463 §3.
        case ed25519SHA256 = "ed25519-sha256"

        /// The key type (`k=`) a key record must name for this algorithm.
        public var keyType: DKIMKey.KeyType {
            switch self {
            case .rsaSHA256: .rsa
            case .ed25519SHA256: .ed25519
            }
        }
    }

    public var algorithm: Algorithm
    /// `b=`, decoded.
    public var signature: [UInt8]
    /// `bh=`, decoded.
    public var bodyHash: [UInt8]
    public var headerCanonicalization: DKIMCanonicalization
    public var bodyCanonicalization: DKIMCanonicalization
    /// `d=`, the SDID, lower-cased.
    public var domain: String
    /// `h=`, the names as written.
    public var signedFields: [String]
    /// `i=`, the AUID; `@` + `d=` when absent (§3.5).
    public var identity: String
    /// `l=`: how many octets of the canonical body were signed; nil for all of them.
    public var bodyLength: Int?
    /// `s=`.
    public var selector: String
    /// `t=`, seconds since 1970.
    public var timestamp: Int?
    /// `x=`, seconds since 1970.
    public var expiration: Int?

    /// Parses the value of a `DKIM-Signature:` field (the octets after the colon). Throws with the
    /// reason when the field is malformed or asks for what Tern does not verify: §6.1.1 says any
    /// inconsistency makes the verifier ignore the signature with PERMFAIL.
    public init(parsing value: some Collection<UInt8>) throws(DKIMSignatureError) {
        let tags: DKIMTagList
        do {
            tags = try DKIMTagList(parsing: value)
        } catch {
            throw DKIMSignatureError(error.reason)
        }
        try self.init(tags: tags)
    }

    init(tags: DKIMTagList) throws(DKIMSignatureError) {
        func required(_ name: String) throws(DKIMSignatureError) -> String {
            guard let value = tags[name] else { throw DKIMSignatureError("missing \(name)= tag") }
            return value
        }
        // §3.5 v=: "MUST have the value "1""; anything else is a version Tern does not know.
        guard try required("v") == "1" else { throw DKIMSignatureError("unsupported version v=\(tags["v"]!)") }

        let algorithmName = try required("a").lowercased()
        if algorithmName == "rsa-sha1" {
            // RFC 8301 §3.1: rsa-sha1 MUST NOT be used for verifying either.
            throw DKIMSignatureError("rsa-sha1 is no longer accepted (RFC 8301)")
        }
        guard let algorithm = Algorithm(rawValue: algorithmName) else {
            throw DKIMSignatureError("unsupported algorithm a=\(algorithmName)")
        }
        self.algorithm = algorithm

        guard let signature = Self.base64(try required("b")), !signature.isEmpty else {
            throw DKIMSignatureError("b= is not base64")
        }
        self.signature = signature
        guard let bodyHash = Self.base64(try required("bh")), !bodyHash.isEmpty else {
            throw DKIMSignatureError("bh= is not base64")
        }
        self.bodyHash = bodyHash

        // §3.5 c=: "header/body", or only the header algorithm with the body one "simple".
        let canonicalization = (tags["c"] ?? "simple/simple").lowercased().split(
            separator: "/", omittingEmptySubsequences: false)
        guard canonicalization.count <= 2,
            let header = DKIMCanonicalization(rawValue: String(canonicalization[0])),
            let body = DKIMCanonicalization(
                rawValue: canonicalization.count == 2 ? String(canonicalization[1]) : "simple")
        else { throw DKIMSignatureError("unsupported canonicalization c=\(tags["c"]!)") }
        headerCanonicalization = header
        bodyCanonicalization = body

        // §3.5 d=: domain-name = sub-domain 1*("." sub-domain).
        let domain = try required("d").lowercased()
        guard Self.isDomainName(domain, labels: 2) else { throw DKIMSignatureError("malformed domain d=\(domain)") }
        self.domain = domain
        let selector = try required("s")
        guard Self.isDomainName(selector, labels: 1) else {
            throw DKIMSignatureError("malformed selector s=\(selector)")
        }
        self.selector = selector

        // §3.5 h=: hdr-name *( [FWS] ":" [FWS] hdr-name ); §6.1.1: must include From.
        let names = try required("h").split(separator: ":", omittingEmptySubsequences: false).map {
            DKIMTagList.removingWhitespace(String($0))
        }
        guard names.allSatisfy({ !$0.isEmpty && $0.utf8.allSatisfy { $0 >= 33 && $0 <= 126 } }) else {
            throw DKIMSignatureError("malformed h= list")
        }
        guard names.contains(where: { $0.lowercased() == "from" }) else {
            throw DKIMSignatureError("From is not signed (h= lacks from)")
        }
        signedFields = names

        // §3.5 i=: [ Local-part ] "@" domain-name, in dkim-quoted-printable; §6.1.1: its domain
        // must be d= or a subdomain of it.
        if let written = tags["i"] {
            guard let identity = Self.quotedPrintable(DKIMTagList.removingWhitespace(written)),
                let at = identity.lastIndex(of: "@")
            else { throw DKIMSignatureError("malformed identity i=\(written)") }
            let identityDomain = identity[identity.index(after: at)...].lowercased()
            guard identityDomain == domain || identityDomain.hasSuffix("." + domain) else {
                throw DKIMSignatureError("identity i=\(identity) is not within d=\(domain)")
            }
            self.identity = identity
        } else {
            identity = "@" + domain
        }

        // §3.5 l= 1*76DIGIT: a count beyond Int is as good as infinite (and fails as too long).
        if let length = tags["l"] {
            guard let digits = Self.digits(length, maximum: 76) else {
                throw DKIMSignatureError("malformed body length l=\(length)")
            }
            bodyLength = Int(digits) ?? Int.max
        }

        // §3.5 q=: a colon-separated list that must offer dns/txt, the only method defined.
        if let methods = tags["q"] {
            let offered = methods.split(separator: ":").map { DKIMTagList.removingWhitespace(String($0)).lowercased() }
            guard offered.contains("dns/txt") else { throw DKIMSignatureError("unsupported query method q=\(methods)") }
        }

        // §3.5 t= and x=: 1*12DIGIT; "the value of the "x=" tag MUST be greater than the value
        // of the "t=" tag if both are present".
        if let text = tags["t"] {
            guard let value = Self.digits(text, maximum: 12).flatMap({ Int($0) }) else {
                throw DKIMSignatureError("malformed timestamp t=\(text)")
            }
            timestamp = value
        }
        if let text = tags["x"] {
            guard let value = Self.digits(text, maximum: 12).flatMap({ Int($0) }) else {
                throw DKIMSignatureError("malformed expiration x=\(text)")
            }
            expiration = value
        }
        if let timestamp, let expiration, expiration <= timestamp {
            throw DKIMSignatureError("expiration x= is not after timestamp t=")
        }
        // z= (copied header fields) is diagnostic only and ignored.
    }

    /// Base64 with FWS anywhere (§2.4 base64string); nil when malformed.
    static func base64(_ value: String) -> [UInt8]? {
        Data(base64Encoded: DKIMTagList.removingWhitespace(value)).map { Array($0) }
    }

    /// The digits of `text` when it is 1 to `maximum` decimal digits.
    private static func digits(_ text: String, maximum: Int) -> Substring? {
        let text = Substring(text)
        guard !text.isEmpty, text.count <= maximum, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
            return nil
        }
        return text
    }

    /// Letters, digits, hyphens and underscores in dot-separated labels of 1 to 63 octets, at
    /// least `labels` of them, at most 253 octets in all (RFC 1035 §2.3.4). Underscores appear in
    /// real selectors though the grammar lacks them; they are harmless in a DNS query.
    public static func isDomainName(_ text: String, labels minimum: Int) -> Bool {
        let labels = text.split(separator: ".", omittingEmptySubsequences: false)
        return text.utf8.count <= 253 && labels.count >= minimum
            && labels.allSatisfy { label in
                (1...63).contains(label.utf8.count) && label.first != "-" && label.last != "-"
                    && label.utf8.allSatisfy { octet in
                        (octet >= 0x30 && octet <= 0x39) || ((octet | 0x20) >= 0x61 && (octet | 0x20) <= 0x7A)
                            || octet == 0x2D || octet == 0x5F
                    }
            }
    }

    /// Decodes dkim-quoted-printable (§2.11): `=XX` hex pairs; nil when malformed.
    static func quotedPrintable(_ text: String) -> String? {
        var output: [UInt8] = []
        var octets = text.utf8.makeIterator()
        while let octet = octets.next() {
            guard octet == UInt8(ascii: "=") else {
                output.append(octet)
                continue
            }
            guard let high = octets.next().flatMap(hexValue), let low = octets.next().flatMap(hexValue) else {
                return nil
            }
            output.append(high << 4 | low)
        }
        return String(decoding: output, as: UTF8.self)
    }

    private static func hexValue(_ octet: UInt8) -> UInt8? {
        switch octet {
        case 0x30...0x39: octet - 0x30
        case 0x41...0x46: octet - 0x41 + 10
        case 0x61...0x66: octet - 0x61 + 10
        default: nil
        }
    }
}

/// Why a `DKIM-Signature:` field cannot be evaluated.
public struct DKIMSignatureError: Error, Sendable, Hashable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}
