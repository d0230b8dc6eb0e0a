/// Where a domain wants its TLS reports: the `_smtp._tls.<domain>` TXT record (RFC 8460 §3).
public struct TLSRPTRecord: Sendable, Hashable {
    /// A report destination Tern can use.
    public enum Destination: Sendable, Hashable, CustomStringConvertible {
        /// `mailto:`: the report goes as a message (§5.3).
        case mailto(String)
        /// `https:`: the report is POSTed to this URL (§5.4).
        case https(String)

        public var description: String {
            switch self {
            case .mailto(let address): "mailto:\(address)"
            case .https(let url): url
            }
        }
    }

    /// The `rua` URIs Tern can use, in the order written; others (another scheme) are skipped.
    public var destinations: [Destination]

    public init(destinations: [Destination]) {
        self.destinations = destinations
    }

    /// The one record among `texts` (the TXT answer, one string per record) that begins with
    /// `v=TLSRPTv1`; the others are someone else's. Two or more mean the domain has no TLS-RPT
    /// policy (§3), as does one that is malformed (thrown, for the log).
    public static func select(from texts: [String]) throws(TLSPolicyError) -> TLSRPTRecord? {
        guard let text = try TXTRecords.one(versioned: "v=TLSRPTv1", in: texts) else { return nil }
        return try parse(text)
    }

    //  tlsrpt-record     = tlsrpt-version 1*(field-delim tlsrpt-field) [field-delim]
    //  field-delim       = *WSP ";" *WSP
    //  tlsrpt-field      = tlsrpt-rua / tlsrpt-extension
    //  tlsrpt-version    = %s"v=TLSRPTv1"
    //  tlsrpt-rua        = %s"rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri)
    //  tlsrpt-uri        = URI
    //  tlsrpt-extension  = tlsrpt-ext-name "=" tlsrpt-ext-value
    //  tlsrpt-ext-name   = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
    //  tlsrpt-ext-value  = 1*(%x21-3A / %x3C / %x3E-7E)
    public static func parse(_ text: String) throws(TLSPolicyError) -> TLSRPTRecord {
        var uris: [Substring]?
        for (_, value) in try TXTRecords.fields(of: text, version: "v=TLSRPTv1", known: ["rua"]) {
            guard uris == nil else { throw TLSPolicyError("TXT record has two rua fields") }
            let list = value.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingWhitespace() }
            guard list.allSatisfy({ !$0.isEmpty && !$0.contains(" ") && !$0.contains("\t") }) else {
                throw TLSPolicyError("rua \"\(value)\" is not a list of URIs")
            }
            uris = list
        }
        guard let uris else { throw TLSPolicyError("TXT record has no rua field") }
        return TLSRPTRecord(destinations: uris.compactMap(destination))
    }

    /// `mailto:addr[?hfields]` (RFC 6068, `%xx` decoded) or `https://…`; nil for anything else.
    static func destination(_ uri: Substring) -> Destination? {
        let lower = uri.lowercased()
        if lower.hasPrefix("mailto:") {
            var address = uri.dropFirst("mailto:".count)
            if let query = address.firstIndex(of: "?") { address = address[..<query] }
            guard let decoded = percentDecoded(address), let at = decoded.lastIndex(of: "@"),
                at != decoded.startIndex, decoded.index(after: at) != decoded.endIndex,
                !decoded.contains(where: { $0 == "<" || $0 == ">" || $0 == " " || $0 == "," })
            else { return nil }
            return .mailto(decoded)
        }
        if lower.hasPrefix("https://"), uri.count > "https://".count { return .https(String(uri)) }
        return nil
    }

    private static func percentDecoded(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next(), let low = iterator.next(),
                let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
            else { return nil }
            bytes.append(value)
        }
        return String(validating: bytes, as: UTF8.self)
    }
}
