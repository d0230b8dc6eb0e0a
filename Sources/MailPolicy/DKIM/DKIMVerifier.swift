import Crypto
import DNSClient
import Foundation
import MailMessage
import NIOCore
import SMTPProtocol
import _CryptoExtras

/// Verifies the DKIM signatures of one message (RFC 6376 §6, RFC 8463) as it streams past.
///
/// Feed `append` the message exactly as received, header section, empty line and body, in
/// chunks of any size; then call `verify` once. Only the header section is kept (up to
/// `headerLimit` octets); the body is canonicalised and hashed chunk by chunk, once per
/// signature evaluated. The first `maxSignatures` signatures (top down: the newest first) are
/// evaluated, each with its own result; any more are reported as `policy` without a lookup, so
/// a message cannot make Tern do unbounded DNS queries or hashing.
public final class DKIMVerifier {
    /// Signatures evaluated per message unless told otherwise.
    public static let defaultMaxSignatures = 5
    /// RFC 8301 §3.2: verifiers MUST accept 1024 to 4096 bits; smaller keys fail.
    static let minimumRSABits = 1024
    /// Larger moduli only cost verification time; none are in real use.
    static let maximumRSABits = 8192

    public let maxSignatures: Int
    private var collector: HeaderSectionCollector
    private var fields: [HeaderField] = []
    private var candidates: [Candidate] = []
    private var prepared = false

    private struct Candidate {
        var field: HeaderField
        var fieldIndex: Int
        var summary: DKIMResult
        var evaluation: Evaluation
    }

    private enum Evaluation {
        case decided
        case pending(DKIMSignature, DKIMBodyHash)
    }

    /// - Parameters:
    ///   - maxSignatures: how many signatures to evaluate; the rest get `policy`.
    ///   - headerLimit: the most header octets kept; a longer header section leaves every
    ///     signature found `permerror`. The server's own header limit is the natural value.
    public init(maxSignatures: Int = DKIMVerifier.defaultMaxSignatures, headerLimit: Int = SMTPLimits().headerSize) {
        self.maxSignatures = maxSignatures
        self.collector = HeaderSectionCollector(limit: headerLimit)
    }

    /// The next chunk of the message, in order.
    public func append(_ chunk: ByteBuffer) {
        guard let body = collector.append(chunk) else { return }
        if !prepared { prepare() }
        for index in candidates.indices {
            guard case .pending(let signature, var hash) = candidates[index].evaluation else { continue }
            candidates[index].evaluation = .decided  // keeps the hash state uniquely referenced
            hash.append(body)
            candidates[index].evaluation = .pending(signature, hash)
        }
    }

    /// The message has ended: one result per `DKIM-Signature:` field, top down; empty when the
    /// message has none. Keys are looked up at `<s>._domainkey.<d>` (§3.6.2.1); `now` judges `x=`.
    public nonisolated(nonsending) func verify(resolver: any Resolver, now: Date) async -> [DKIMResult] {
        if !prepared {
            collector.finish()
            prepare()
        }
        var keys: [String: KeyLookup] = [:]
        var results: [DKIMResult] = []
        for candidate in candidates {
            guard case .pending(let signature, var bodyHash) = candidate.evaluation else {
                results.append(candidate.summary)
                continue
            }
            var result = candidate.summary
            // §3.5 x=: signatures past their expiry "MAY be considered invalid"; Tern does, with
            // no grace period, and without asking the DNS. A t= in the future is tolerated
            // (clock skew).
            if let expiration = signature.expiration, expiration < Int(now.timeIntervalSince1970) {
                result.result = .fail
                result.reason = "signature expired"
                results.append(result)
                continue
            }
            let name = "\(signature.selector)._domainkey.\(signature.domain)"
            let lookup: KeyLookup
            if let known = keys[name] {
                lookup = known
            } else {
                lookup = await Self.lookUp(name, resolver: resolver)
                keys[name] = lookup
            }
            let (outcome, reason) = Self.evaluate(
                signature, key: lookup, bodyHash: &bodyHash, field: candidate.field, fieldIndex: candidate.fieldIndex,
                fields: fields)
            if case .found(let record) = lookup { result.testing = record.isTesting }
            result.result = outcome
            result.reason = reason
            results.append(result)
        }
        return results
    }

    /// Finds the signatures once the header section is complete and prepares their body hashes.
    private func prepare() {
        prepared = true
        fields = HeaderField.split(headerSection: collector.headerSection)
        var seen = 0
        for (index, field) in fields.enumerated() where field.hasName("DKIM-Signature") {
            seen += 1
            var summary = Self.summary(of: field)
            var evaluation = Evaluation.decided
            if seen > maxSignatures {
                summary.result = .policy
                summary.reason = "not evaluated: more than \(maxSignatures) signatures"
            } else if collector.overflowed {
                summary.result = .permerror
                summary.reason = "header section longer than \(collector.limit) octets"
            } else {
                do {
                    let signature = try DKIMSignature(parsing: field.value)
                    summary.identity = signature.identity
                    evaluation = .pending(
                        signature, DKIMBodyHash(signature.bodyCanonicalization, limit: signature.bodyLength))
                } catch {
                    summary.result = .neutral
                    summary.reason = error.reason
                }
            }
            candidates.append(Candidate(field: field, fieldIndex: index, summary: summary, evaluation: evaluation))
        }
    }

    /// What a result names, read as far as the field allows.
    private static func summary(of field: HeaderField) -> DKIMResult {
        let tags = try? DKIMTagList(parsing: field.value)
        let domain = tags?["d"]?.lowercased() ?? ""
        return DKIMResult(
            result: .neutral, domain: domain, selector: tags?["s"] ?? "",
            identity: domain.isEmpty ? "" : "@" + domain, algorithm: tags?["a"]?.lowercased() ?? "",
            signature: tags?["b"].map(DKIMTagList.removingWhitespace) ?? "", reason: nil)
    }

    private enum KeyLookup {
        case found(DKIMKeyRecord)
        case failed(DKIMResult.Outcome, String)
    }

    /// §6.1.2: fetch and parse the key record; DNS trouble is temperror, absence permerror.
    private static func lookUp(_ name: String, resolver: any Resolver) async -> KeyLookup {
        let records: [String]
        do {
            records = try await resolver.txt(name).value
        } catch {
            switch error {
            case .nameNotFound, .noData: return .failed(.permerror, "no key record at \(name)")
            case .invalidInput: return .failed(.permerror, "cannot look up \(name): \(error)")
            case .temporary, .malformed: return .failed(.temperror, "key lookup at \(name): \(error)")
            }
        }
        // §3.6.2.2: several records make the result undefined; the first that parses is used.
        var firstError: String?
        for text in records {
            do {
                return .found(try DKIMKeyRecord(parsing: text))
            } catch {
                firstError = firstError ?? error.reason
            }
        }
        return .failed(.permerror, firstError ?? "no key record at \(name)")
    }

    /// §6.1: key, body hash, header signature, in that order.
    private static func evaluate(
        _ signature: DKIMSignature, key lookup: KeyLookup, bodyHash: inout DKIMBodyHash, field: HeaderField,
        fieldIndex: Int, fields: [HeaderField]
    ) -> (DKIMResult.Outcome, String?) {
        let record: DKIMKeyRecord
        switch lookup {
        case .failed(let outcome, let reason): return (outcome, reason)
        case .found(let found): record = found
        }
        if record.isRevoked { return (.permerror, "key revoked") }
        if let problem = record.check(signature) { return (.permerror, problem) }

        let verify: (SHA256.Digest) -> Bool
        switch signature.algorithm {
        case .rsaSHA256:
            guard let bits = DKIMKeyEncoding.rsaPublicKeyBits(record.publicKey) else {
                return (.permerror, "malformed RSA public key")
            }
            if bits < minimumRSABits { return (.fail, "RSA key of \(bits) bits is too weak (RFC 8301)") }
            if bits > maximumRSABits { return (.permerror, "RSA key of \(bits) bits is too large") }
            guard let key = try? _RSA.Signing.PublicKey(unsafeDERRepresentation: record.publicKey) else {
                return (.permerror, "malformed RSA public key")
            }
            let value = _RSA.Signing.RSASignature(rawRepresentation: signature.signature)
            verify = { key.isValidSignature(value, for: $0, padding: .insecurePKCS1v1_5) }
        case .ed25519SHA256:
            // RFC 8463 §4: p= is the raw 32-octet public key.
            guard record.publicKey.count == 32,
                let key = try? Curve25519.Signing.PublicKey(rawRepresentation: record.publicKey)
            else { return (.permerror, "malformed Ed25519 public key") }
            // RFC 8463 §3: PureEdDSA over the SHA-256 of the header data.
            verify = { key.isValidSignature(signature.signature, for: Data($0)) }
        }

        let (digest, length) = bodyHash.finish()
        if let limit = signature.bodyLength, length < limit {
            return (.fail, "body is shorter than l=\(limit)")
        }
        guard digest == signature.bodyHash else { return (.fail, "body hash did not verify") }

        guard let emptied = DKIMHeaderHash.removingSignature(from: field) else {
            return (.neutral, "malformed signature field")
        }
        let headerDigest = DKIMHeaderHash.digest(
            fields: fields, signedFields: signature.signedFields, canonicalization: signature.headerCanonicalization,
            signatureField: emptied, excluding: fieldIndex)
        return verify(headerDigest) ? (.pass, nil) : (.fail, "signature did not verify")
    }
}
