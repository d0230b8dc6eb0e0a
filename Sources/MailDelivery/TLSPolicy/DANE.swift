import Crypto
import DNSClient

/// TLSA records as SMTP uses them (RFC 7672, RFC 7671, RFC 6698): which records count, and
/// whether a certificate matches one. Pure functions over DER octets; `CertificateVerifier`
/// builds the DANE-TA chain.
public enum DANE {
    /// RFC 6698 §2.1.1: the certificate usages.
    public static let daneTA: UInt8 = 2
    public static let daneEE: UInt8 = 3

    /// The records an SMTP client may use (RFC 7672 §3.1): DANE-TA(2) and DANE-EE(3) only —
    /// PKIX-TA(0) and PKIX-EE(1) would need a CA the server cannot name — with a known
    /// selector (0 full certificate, 1 SubjectPublicKeyInfo) and matching type (0 exact, 1
    /// SHA-256, 2 SHA-512) whose data has the right length. The rest are ignored (RFC 7671
    /// §4.1); when none remain, TLS is still mandatory, but unauthenticated (RFC 7672 §2.2).
    public static func usable(_ records: [TLSARecord]) -> [TLSARecord] {
        records.filter { record in
            guard record.usage == daneTA || record.usage == daneEE, record.selector <= 1 else { return false }
            switch record.matchingType {
            case 0: return !record.data.isEmpty
            case 1: return record.data.count == SHA256.byteCount
            case 2: return record.data.count == SHA512.byteCount
            default: return false
            }
        }
    }

    /// The association data a certificate gives for a record's selector and matching type
    /// (RFC 6698 §2.1.2, §2.1.3): the DER certificate or its SubjectPublicKeyInfo, as is or
    /// hashed. nil for a selector or matching type this client does not know.
    public static func associationData(
        certificate: [UInt8], subjectPublicKeyInfo: [UInt8], selector: UInt8, matchingType: UInt8
    ) -> [UInt8]? {
        let selected: [UInt8]
        switch selector {
        case 0: selected = certificate
        case 1: selected = subjectPublicKeyInfo
        default: return nil
        }
        switch matchingType {
        case 0: return selected
        case 1: return Array(SHA256.hash(data: selected))
        case 2: return Array(SHA512.hash(data: selected))
        default: return nil
        }
    }

    /// The certificate (DER, with its SubjectPublicKeyInfo) matches `record`'s data.
    public static func matches(_ record: TLSARecord, certificate: [UInt8], subjectPublicKeyInfo: [UInt8]) -> Bool {
        guard
            let data = associationData(
                certificate: certificate, subjectPublicKeyInfo: subjectPublicKeyInfo, selector: record.selector,
                matchingType: record.matchingType)
        else { return false }
        return data == record.data
    }

    /// The SubjectPublicKeyInfo of a DER certificate, octet for octet as the certificate holds
    /// it (selector 1 hashes exactly these octets, RFC 6698 §2.1.2); nil when the DER is not a
    /// certificate.
    ///
    ///     Certificate  ::= SEQUENCE { tbsCertificate TBSCertificate, ... }
    ///     TBSCertificate ::= SEQUENCE { version [0] EXPLICIT Version DEFAULT v1,
    ///         serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, ... }
    public static func subjectPublicKeyInfo(certificate der: [UInt8]) -> [UInt8]? {
        guard let certificate = element(der, at: 0), certificate.tag == 0x30,
            let tbs = element(der, at: certificate.contentStart), tbs.tag == 0x30, tbs.end <= certificate.end
        else { return nil }
        var offset = tbs.contentStart
        if let version = element(der, at: offset), version.tag == 0xA0 { offset = version.end }
        // serialNumber, signature, issuer, validity, subject
        for _ in 0..<5 {
            guard let field = element(der, at: offset), field.end <= tbs.end else { return nil }
            offset = field.end
        }
        guard let key = element(der, at: offset), key.tag == 0x30, key.end <= tbs.end else { return nil }
        return Array(der[offset..<key.end])
    }

    /// One DER TLV (X.690 §8.1): its tag, where its contents start, where it ends.
    private static func element(_ bytes: [UInt8], at offset: Int) -> (tag: UInt8, contentStart: Int, end: Int)? {
        guard offset + 2 <= bytes.count else { return nil }
        let tag = bytes[offset]
        let first = Int(bytes[offset + 1])
        var length = first
        var contentStart = offset + 2
        if first >= 0x80 {
            let count = first & 0x7F
            guard (1...4).contains(count), offset + 2 + count <= bytes.count else { return nil }
            length = bytes[(offset + 2)..<(offset + 2 + count)].reduce(0) { $0 << 8 | Int($1) }
            contentStart += count
        }
        guard length <= bytes.count - contentStart else { return nil }
        return (tag, contentStart, contentStart + length)
    }

    /// `_25._tcp.mx1.example.com` (RFC 7672 §2.2.3; RFC 6698 §3).
    public static func tlsaName(host: String, port: Int) -> String {
        "_\(port)._tcp.\(host)"
    }
}
