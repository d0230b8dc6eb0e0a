import DNSClient
import Foundation
// The check runs against a given time (tests fix it); X509 keeps that behind an SPI.
@_spi(FixedExpiryValidationTime) import X509

/// What a TLS delivery learned of the server's certificate, for the log's `tls_cert` and the
/// policy that may refuse the handshake. Postfix's words: a *verified* connection has a
/// certificate that chains to a trust anchor and names the host; anything else is untrusted.
public enum CertificateVerdict: Sendable, Hashable, CustomStringConvertible {
    public enum Method: String, Sendable, Hashable {
        /// WebPKI: a chain to a root of the trust store, valid now, naming the MX host.
        case pkix = ""
        /// A TLSA DANE-EE(3) record matches the server's own certificate or key.
        case daneEE = "DANE-EE"
        /// A TLSA DANE-TA(2) record matches a certificate of the chain, and the chain from it
        /// is valid and names the MX host.
        case daneTA = "DANE-TA"
    }

    case verified(Method)
    case untrusted(String)

    public var isVerified: Bool {
        if case .verified = self { true } else { false }
    }

    /// `verified`, `verified (DANE-EE)`, `untrusted (certificate has expired)`.
    public var description: String {
        switch self {
        case .verified(let method): method == .pkix ? "verified" : "verified (\(method.rawValue))"
        case .untrusted(let reason): "untrusted (\(reason))"
        }
    }
}

/// The roots a server certificate may chain to: the system's bundle and an optional file of
/// the administrator's own (`[delivery] tls_ca_file`). Loaded once, shared by every delivery.
public struct TrustAnchors: Sendable {
    public let store: CertificateStore
    public let count: Int

    /// Debian's (and most distributions') bundle of the WebPKI roots.
    public static let systemBundle = "/etc/ssl/certs/ca-certificates.crt"

    public init(_ certificates: [Certificate]) {
        self.store = CertificateStore(certificates)
        self.count = certificates.count
    }

    /// The system bundle (none when the file is missing: every certificate is then untrusted,
    /// which opportunistic TLS survives) and the certificates of `extraFile`, which must load.
    public static func load(
        systemBundle: String = TrustAnchors.systemBundle, extraFile: String?
    ) throws(TLSPolicyError) -> TrustAnchors {
        var certificates: [Certificate] = []
        if let text = try? String(contentsOfFile: systemBundle, encoding: .utf8) {
            certificates += (try? Self.certificates(pem: text)) ?? []
        }
        if let extraFile { certificates += try Self.certificates(file: extraFile) }
        return TrustAnchors(certificates)
    }

    /// How many certificates a PEM file holds; throws when it cannot be read or holds none, so
    /// that `tern check-config` can say so.
    public static func validate(file: String) throws(TLSPolicyError) -> Int {
        try certificates(file: file).count
    }

    static func certificates(file: String) throws(TLSPolicyError) -> [Certificate] {
        let text: String
        do {
            text = try String(contentsOfFile: file, encoding: .utf8)
        } catch {
            throw TLSPolicyError("cannot read \(file): \(error.localizedDescription)")
        }
        let certificates = try Self.certificates(pem: text)
        guard !certificates.isEmpty else { throw TLSPolicyError("\(file) holds no PEM certificate") }
        return certificates
    }

    /// Every `BEGIN CERTIFICATE` block of a PEM text; other blocks are skipped.
    public static func certificates(pem text: String) throws(TLSPolicyError) -> [Certificate] {
        var certificates: [Certificate] = []
        let begin = "-----BEGIN CERTIFICATE-----"
        let end = "-----END CERTIFICATE-----"
        var rest = Substring(text)
        while let start = rest.range(of: begin) {
            guard let stop = rest[start.upperBound...].range(of: end) else {
                throw TLSPolicyError("a PEM certificate has no END line")
            }
            let block = String(rest[start.lowerBound..<stop.upperBound])
            do {
                certificates.append(try Certificate(pemEncoded: block))
            } catch {
                throw TLSPolicyError("a PEM certificate does not parse: \(error)")
            }
            rest = rest[stop.upperBound...]
        }
        return certificates
    }
}

/// Checks a server's certificate chain, as presented in the handshake (DER, leaf first),
/// against the trust anchors (WebPKI, RFC 5280 and RFC 6125 via swift-certificates) or against
/// TLSA records (RFC 7672 §3).
public struct CertificateVerifier: Sendable {
    public let anchors: TrustAnchors

    public init(anchors: TrustAnchors) {
        self.anchors = anchors
    }

    /// WebPKI: a chain from the leaf to a trust anchor, valid at `now`, for `hostName`.
    public func verifyPKIX(chain: [[UInt8]], hostName: String, now: Date = Date()) async -> CertificateVerdict {
        let certificates: [Certificate]
        switch Self.parse(chain) {
        case .parsed(let parsed): certificates = parsed
        case .unreadable(let verdict): return verdict
        }
        return await Self.validate(
            leaf: certificates[0], intermediates: Array(certificates.dropFirst()), roots: anchors.store,
            hostName: hostName, now: now, method: .pkix)
    }

    /// DANE (RFC 7672 §3.1): a DANE-EE record matching the leaf verifies it with no name or date
    /// check (§3.1.1); a DANE-TA record matching a certificate of the chain makes that
    /// certificate the trust anchor of an ordinary chain check for `hostName` (§3.1.2).
    /// `records` are the usable ones (`DANE.usable`).
    public func verifyDANE(
        chain: [[UInt8]], records: [TLSARecord], hostName: String, now: Date = Date()
    ) async -> CertificateVerdict {
        let certificates: [Certificate]
        switch Self.parse(chain) {
        case .parsed(let parsed): certificates = parsed
        case .unreadable(let verdict): return verdict
        }
        let keys = chain.map { DANE.subjectPublicKeyInfo(certificate: $0) ?? [] }
        for record in records where record.usage == DANE.daneEE {
            if DANE.matches(record, certificate: chain[0], subjectPublicKeyInfo: keys[0]) { return .verified(.daneEE) }
        }
        var lastFailure: CertificateVerdict?
        for record in records where record.usage == DANE.daneTA {
            for index in certificates.indices
            where DANE.matches(record, certificate: chain[index], subjectPublicKeyInfo: keys[index]) {
                // The certificates between the leaf and the anchor; none when the leaf is the anchor.
                let verdict = await Self.validate(
                    leaf: certificates[0], intermediates: Array(certificates.dropFirst().prefix(max(0, index - 1))),
                    roots: CertificateStore([certificates[index]]), hostName: hostName, now: now, method: .daneTA)
                if verdict.isVerified { return verdict }
                lastFailure = verdict
            }
        }
        if let lastFailure, case .untrusted(let reason) = lastFailure {
            return .untrusted("DANE-TA: \(reason)")
        }
        return .untrusted("no TLSA record matches the certificate chain")
    }

    private enum ParsedChain {
        case parsed([Certificate])
        case unreadable(CertificateVerdict)
    }

    private static func parse(_ chain: [[UInt8]]) -> ParsedChain {
        guard !chain.isEmpty else { return .unreadable(.untrusted("no certificate presented")) }
        var certificates: [Certificate] = []
        for der in chain {
            guard let certificate = try? Certificate(derEncoded: der) else {
                return .unreadable(.untrusted("a certificate of the chain does not parse"))
            }
            certificates.append(certificate)
        }
        return .parsed(certificates)
    }

    private static func validate(
        leaf: Certificate, intermediates: [Certificate], roots: CertificateStore, hostName: String, now: Date,
        method: CertificateVerdict.Method
    ) async -> CertificateVerdict {
        var verifier = Verifier(rootCertificates: roots) {
            RFC5280Policy(fixedExpiryValidationTime: now)
            ServerIdentityPolicy(serverHostname: hostName, serverIP: nil)
        }
        switch await verifier.validate(leaf: leaf, intermediates: CertificateStore(intermediates)) {
        case .validCertificate:
            return .verified(method)
        case .couldNotValidate(let failures):
            return .untrusted(reason(failures.map(\.policyFailureReason.description), leaf: leaf, now: now))
        }
    }

    /// A short reason for the log from swift-certificates' failures, whose texts quote whole
    /// certificates.
    static func reason(_ failures: [String], leaf: Certificate, now: Date) -> String {
        if leaf.notValidAfter < now { return "certificate has expired" }
        if leaf.notValidBefore > now { return "certificate is not yet valid" }
        guard let failure = failures.first else {
            return leaf.issuer == leaf.subject ? "self-signed certificate" : "no chain to a trusted root"
        }
        if failure.contains("SAN") || failure.contains("ommon name") || failure.contains("hostname") {
            return "certificate does not name the host"
        }
        if failure.contains("expired") { return "a certificate of the chain has expired" }
        if failure.contains("not yet valid") { return "a certificate of the chain is not yet valid" }
        return String(failure.prefix(120))
    }
}
