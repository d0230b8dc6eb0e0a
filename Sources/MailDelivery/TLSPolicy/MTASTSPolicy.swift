/// Why an MTA-STS record or policy, a policy fetch or a trust-anchor file cannot be used. The
/// description completes a log line: "max_age 40000000 exceeds 31557600".
public struct TLSPolicyError: Error, Sendable, Hashable, CustomStringConvertible {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}

/// The `_mta-sts.<domain>` TXT record (RFC 8461 §3.1): it says a policy exists and names its
/// version, so that a sender knows when its cached copy is stale.
public struct MTASTSRecord: Sendable, Hashable {
    /// `id=`: 1 to 32 letters and digits.
    public var id: String

    public init(id: String) {
        self.id = id
    }

    /// The one record among `texts` (the TXT answer, one string per record) that begins with
    /// `v=STSv1`. Records that do not are someone else's and are ignored; two or more, or one
    /// that is malformed, mean the domain has no usable policy (§3.1).
    public static func select(from texts: [String]) throws(TLSPolicyError) -> MTASTSRecord? {
        guard let text = try TXTRecords.one(versioned: "v=STSv1", in: texts) else { return nil }
        return try parse(text)
    }

    //  sts-text-record = sts-version 1*(sts-field-delim sts-field) [sts-field-delim]
    //  sts-field       = sts-id / sts-extension
    //  sts-field-delim = *WSP ";" *WSP
    //  sts-version     = %s"v=STSv1"
    //  sts-id          = %s"id=" 1*32(ALPHA / DIGIT)
    //  sts-extension   = sts-ext-name "=" sts-ext-value
    //  sts-ext-name    = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
    //  sts-ext-value   = 1*(%x21-3A / %x3C / %x3E-7E)
    public static func parse(_ text: String) throws(TLSPolicyError) -> MTASTSRecord {
        var id: String?
        for (_, value) in try TXTRecords.fields(of: text, version: "v=STSv1", known: ["id"]) {
            guard id == nil else { throw TLSPolicyError("TXT record has two ids") }
            guard (1...32).contains(value.count), value.allSatisfy(\.isASCIIAlphanumeric) else {
                throw TLSPolicyError("id \"\(value)\" is not 1 to 32 letters and digits")
            }
            id = String(value)
        }
        guard let id else { throw TLSPolicyError("TXT record has no id") }
        return MTASTSRecord(id: id)
    }

    static func isExtensionName(_ name: Substring) -> Bool {
        guard let first = name.first, first.isASCIIAlphanumeric, name.count <= 32 else { return false }
        return name.allSatisfy { $0.isASCIIAlphanumeric || $0 == "_" || $0 == "-" || $0 == "." }
    }
}

/// An MTA-STS policy (RFC 8461 §3.2), as served at
/// `https://mta-sts.<domain>/.well-known/mta-sts.txt`.
public struct MTASTSPolicy: Sendable, Hashable, Codable {
    public enum Mode: String, Sendable, Hashable, Codable {
        /// Deliver only to matching MX hosts over TLS with a valid certificate.
        case enforce
        /// Deliver as usual, but report (here: log) what `enforce` would have refused.
        case testing
        /// The domain withdrew its policy.
        case none
    }

    public var mode: Mode
    /// MX patterns in lower case without a final dot: `mx1.example.com` or `*.example.net`.
    public var mx: [String]
    /// Seconds the policy may be cached, at most `maximumAge`.
    public var maxAge: Int

    /// RFC 8461 §3.2: about one year.
    public static let maximumAge = 31_557_600
    /// RFC 8461 §3.3 lets senders bound the policy's size; 64 KiB is far beyond any real one.
    public static let maximumSize = 64 * 1024

    public init(mode: Mode, mx: [String], maxAge: Int) {
        self.mode = mode
        self.mx = mx
        self.maxAge = maxAge
    }

    //  sts-policy-record   = sts-policy-field *WSP *(sts-policy-term sts-policy-field *WSP)
    //                        [sts-policy-term]
    //  sts-policy-term     = LF / CRLF
    //  sts-policy-field    = sts-policy-version / sts-policy-mode / sts-policy-max-age /
    //                        sts-policy-mx / sts-policy-extension
    //  sts-policy-field-delim = ":" *WSP
    //  sts-policy-version  = %s"version" sts-policy-field-delim %s"STSv1"
    //  sts-policy-mode     = %s"mode" sts-policy-field-delim ("testing" / "enforce" / "none")
    //  sts-policy-mx       = %s"mx" sts-policy-field-delim ["*."] Domain
    //  sts-policy-max-age  = %s"max_age" sts-policy-field-delim 1*10DIGIT   ; <= 31557600
    //
    // Unknown fields are extensions and ignored; of a field other than `mx` given twice, the
    // first counts. Blank lines are tolerated, as most senders do.
    public static func parse(_ text: String) throws(TLSPolicyError) -> MTASTSPolicy {
        var version: String?
        var mode: Mode?
        var maxAge: Int?
        var mx: [String] = []
        // "\r\n" is one Character in Swift: split on it as well as on a lone LF.
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\r\n" || $0 == "\n" }) {
            var line = Substring(rawLine)
            if line.hasSuffix("\r") { line.removeLast() }
            line = line.trimmingTrailingWhitespace()
            if line.isEmpty { continue }
            guard let colon = line.firstIndex(of: ":") else { throw TLSPolicyError("line \"\(line)\" has no \":\"") }
            let name = line[..<colon]
            let value = line[line.index(after: colon)...].trimmingWhitespace()
            switch name {
            case "version":
                if version == nil { version = String(value) }
            case "mode":
                guard mode == nil else { continue }
                guard let parsed = Mode(rawValue: String(value)) else {
                    throw TLSPolicyError("unknown mode \"\(value)\"")
                }
                mode = parsed
            case "max_age":
                guard maxAge == nil else { continue }
                guard (1...10).contains(value.count), value.allSatisfy(\.isASCIIDigit), let seconds = Int(value) else {
                    throw TLSPolicyError("max_age \"\(value)\" is not a number of seconds")
                }
                guard seconds <= maximumAge else {
                    throw TLSPolicyError("max_age \(seconds) exceeds \(maximumAge)")
                }
                maxAge = seconds
            case "mx":
                guard let pattern = Self.mxPattern(value) else {
                    throw TLSPolicyError("mx \"\(value)\" is not a host name")
                }
                mx.append(pattern)
            default:
                guard MTASTSRecord.isExtensionName(name) else {
                    throw TLSPolicyError("malformed field name \"\(name)\"")
                }
            }
        }
        guard let version else { throw TLSPolicyError("no version field") }
        guard version == "STSv1" else { throw TLSPolicyError("version \"\(version)\" is not STSv1") }
        guard let mode else { throw TLSPolicyError("no mode field") }
        guard let maxAge else { throw TLSPolicyError("no max_age field") }
        if mode != .none && mx.isEmpty { throw TLSPolicyError("no mx field") }
        return MTASTSPolicy(mode: mode, mx: mx, maxAge: maxAge)
    }

    /// `["*."] Domain` in lower case without a final dot; nil when it is not one.
    static func mxPattern(_ text: Substring) -> String? {
        var name = text.lowercased()
        if name.hasSuffix(".") { name.removeLast() }
        let host = name.hasPrefix("*.") ? String(name.dropFirst(2)) : name
        let labels = host.split(separator: ".", omittingEmptySubsequences: false)
        guard !host.isEmpty, host.utf8.count <= 253,
            labels.allSatisfy({ label in
                (1...63).contains(label.utf8.count) && label.first != "-" && label.last != "-"
                    && label.allSatisfy { $0.isASCIIAlphanumeric || $0 == "-" || $0 == "_" }
            })
        else { return nil }
        return name
    }

    /// The MX host may receive mail for the domain under this policy (RFC 8461 §4.1).
    public func matches(mxHost: String) -> Bool {
        mx.contains { Self.pattern($0, matches: mxHost) }
    }

    /// A pattern `*.example.com` matches exactly one more label (`mx1.example.com`, not
    /// `a.b.example.com` nor `example.com`); any other pattern matches the name itself.
    /// Case-insensitive; a final dot on the host is ignored.
    public static func pattern(_ pattern: String, matches host: String) -> Bool {
        var host = host.lowercased()
        if host.hasSuffix(".") { host.removeLast() }
        let pattern = pattern.lowercased()
        guard pattern.hasPrefix("*.") else { return host == pattern }
        let suffix = pattern.dropFirst(1)  // ".example.com"
        guard host.hasSuffix(suffix) else { return false }
        let first = host.dropLast(suffix.count)
        return !first.isEmpty && !first.contains(".")
    }
}

extension Character {
    var isASCIIAlphanumeric: Bool { isASCII && (isLetter || isNumber) }
    var isASCIIDigit: Bool { isASCII && isNumber }
}

extension Substring {
    func trimmingWhitespace() -> Substring {
        var text = self
        while let first = text.first, first == " " || first == "\t" { text.removeFirst() }
        return text.trimmingTrailingWhitespace()
    }

    func trimmingTrailingWhitespace() -> Substring {
        var text = self
        while let last = text.last, last == " " || last == "\t" { text.removeLast() }
        return text
    }
}

/// The policy records of MTA-STS (RFC 8461 §3.1) and TLS-RPT (RFC 8460 §3) live in TXT answers
/// beside unrelated records, and both are found the same way.
enum TXTRecords {
    /// The one text that begins with `version` (then nothing, `;` or whitespace); nil when
    /// none does. Two or more mean the domain has no usable record: thrown, for the log.
    static func one(versioned version: String, in texts: [String]) throws(TLSPolicyError) -> String? {
        let candidates = texts.filter { text in
            guard text.hasPrefix(version) else { return false }
            let rest = text.dropFirst(version.count)
            return rest.isEmpty || rest.first == ";" || rest.first == " " || rest.first == "\t"
        }
        guard candidates.count <= 1 else {
            throw TLSPolicyError("\(candidates.count) TXT records begin with \(version)")
        }
        return candidates.first
    }

    /// The fields named in `known`, in order, of a record in the grammar both share:
    /// `version *(*WSP ";" *WSP name "=" value) [*WSP ";"]`. Extension fields (any other name)
    /// must have the form RFC 8461 §3.1 and RFC 8460 §3 give them, and are then left out.
    static func fields(
        of text: String, version: String, known: Set<Substring>
    ) throws(TLSPolicyError) -> [(name: Substring, value: Substring)] {
        let fields = text.split(separator: ";", omittingEmptySubsequences: false).map { $0.trimmingWhitespace() }
        guard fields.first.map(String.init) == version else {
            throw TLSPolicyError("TXT record does not begin with \(version)")
        }
        var result: [(name: Substring, value: Substring)] = []
        for (position, field) in fields.enumerated().dropFirst() {
            // A delimiter may end the record: only the last field may be empty.
            if field.isEmpty {
                guard position == fields.count - 1 else { throw TLSPolicyError("empty field in TXT record") }
                continue
            }
            guard let equals = field.firstIndex(of: "=") else {
                throw TLSPolicyError("field \"\(field)\" has no \"=\"")
            }
            let name = field[..<equals]
            let value = field[field.index(after: equals)...]
            if known.contains(name) {
                result.append((name, value))
                continue
            }
            guard MTASTSRecord.isExtensionName(name), !value.isEmpty,
                value.unicodeScalars.allSatisfy({ (0x21...0x7E).contains($0.value) && $0 != ";" && $0 != "=" })
            else { throw TLSPolicyError("malformed field \"\(field)\" in TXT record") }
        }
        return result
    }
}
