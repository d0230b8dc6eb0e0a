import Crypto
import MailMessage
import NIOCore

/// The body hash of one signature (RFC 6376 §3.7): canonicalise as the body streams past and
/// hash the canonical octets (at most `l=` of them).
struct DKIMBodyHash {
    private var canonicalizer: DKIMBodyCanonicalizer
    private var hash = HashOutput()

    private struct HashOutput: DKIMCanonicalOutput {
        var function = SHA256()
        mutating func write(_ octets: UnsafeRawBufferPointer) { function.update(bufferPointer: octets) }
    }

    init(_ canonicalization: DKIMCanonicalization, limit: Int?) {
        canonicalizer = DKIMBodyCanonicalizer(canonicalization, limit: limit)
    }

    mutating func append(_ chunk: ByteBuffer) {
        canonicalizer.append(chunk, to: &hash)
    }

    /// The digest and the full length of the canonical body (which `l=` must not exceed).
    mutating func finish() -> (digest: [UInt8], length: Int) {
        canonicalizer.finish(to: &hash)
        return (Array(hash.function.finalize()), canonicalizer.length)
    }
}

/// The header hash (RFC 6376 §3.7): the fields `h=` names, then the signature's own field.
enum DKIMHeaderHash {
    /// - Parameters:
    ///   - fields: the message's header fields, top to bottom.
    ///   - signedFields: the `h=` names, in order.
    ///   - signatureField: the DKIM-Signature field with its `b=` value emptied.
    ///   - excluding: the index in `fields` of that field, which `h=` cannot select.
    static func digest(
        fields: [HeaderField], signedFields: [String], canonicalization: DKIMCanonicalization,
        signatureField: HeaderField, excluding: Int?
    ) -> SHA256.Digest {
        // §5.4.2: several instances of a name are signed bottom-up; a name with no instance
        // left contributes nothing (which is how "oversigning" locks out added fields).
        var instances: [String: [Int]] = [:]
        for (index, field) in fields.enumerated() where index != excluding {
            instances[field.name.lowercased(), default: []].append(index)
        }
        var hash = SHA256()
        for name in signedFields {
            guard let index = instances[name.lowercased()]?.popLast() else { continue }
            hash.update(data: canonicalization.canonicalize(fields[index]))
        }
        // §3.7: the signature field last, "without a trailing CRLF".
        var own = canonicalization.canonicalize(signatureField)
        if own.count >= 2 && own[own.count - 2] == 0x0D && own[own.count - 1] == 0x0A { own.removeLast(2) }
        hash.update(data: own)
        return hash.finalize()
    }

    /// The field with the value of its `b=` tag deleted, "including all surrounding whitespace"
    /// (§3.5 b=); nil when the field's tag list cannot be parsed.
    static func removingSignature(from field: HeaderField) -> HeaderField? {
        guard let tags = try? DKIMTagList(parsing: field.value),
            let b = tags.tags.first(where: { $0.name == "b" })
        else { return nil }
        var emptied = field
        let start = field.valueStart + b.valueRange.lowerBound
        emptied.octets.removeSubrange(start..<field.valueStart + b.valueRange.upperBound)
        return emptied
    }
}
