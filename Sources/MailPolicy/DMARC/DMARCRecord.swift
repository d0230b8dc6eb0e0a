/// A DMARC policy record (RFC 7489 §6.3, grammar in §6.4), the TXT record at `_dmarc.<domain>`.
///
///     dmarc-record = dmarc-version dmarc-sep [dmarc-request] [dmarc-sep dmarc-srequest] ...
///     dmarc-version = "v" *WSP "=" *WSP %x44 %x4d %x41 %x52 %x43 %x31   ; "DMARC1"
///     dmarc-sep = *WSP %x3b *WSP
///
/// The tags after `v` are accepted in any order, `p` too (the grammar wants it second, but
/// receivers commonly accept it anywhere). Unknown tags are ignored (§6.3); an invalid value of
/// an optional tag leaves that tag's default. A missing or invalid `p`, or an invalid `sp`, makes
/// the record unusable unless `rua` has a valid URI, when it counts as `p=none` (§6.6.3 step 6).
public struct DMARCRecord: Sendable, Hashable {
    /// `p` and `sp`: what the domain owner asks receivers to do with failing mail.
    public enum Policy: String, Sendable, Hashable, Comparable {
        case none
        case quarantine
        case reject

        /// §6.6.4: the policy applied to mail that the `pct` sampling leaves out.
        public var nextDown: Policy {
            switch self {
            case .reject: .quarantine
            case .quarantine, .none: .none
            }
        }

        public static func < (a: Policy, b: Policy) -> Bool {
            let order: [Policy] = [.none, .quarantine, .reject]
            return order.firstIndex(of: a)! < order.firstIndex(of: b)!
        }
    }

    /// `adkim` and `aspf` (§3.1): relaxed compares Organizational Domains, strict the names.
    public enum Alignment: String, Sendable, Hashable {
        case relaxed = "r"
        case strict = "s"
    }

    /// `dmarc-uri = URI [ "!" 1*DIGIT [ "k" / "m" / "g" / "t" ] ]` (§6.4): where reports go
    /// and the largest report the owner accepts.
    public struct ReportURI: Sendable, Hashable {
        public var uri: String
        /// In octets; nil when not given.
        public var maximumSize: UInt64?

        public init(uri: String, maximumSize: UInt64? = nil) {
            self.uri = uri
            self.maximumSize = maximumSize
        }
    }

    /// `p`.
    public var policy: Policy
    /// `sp`: for subdomains of the Organizational Domain; nil means `p` applies.
    public var subdomainPolicy: Policy?
    /// `pct`, 0–100: the share of failing mail the policy is meant for (§6.6.4).
    public var percent = 100
    /// `adkim`.
    public var dkimAlignment = Alignment.relaxed
    /// `aspf`.
    public var spfAlignment = Alignment.relaxed
    /// `rua`: aggregate report addresses (the valid ones).
    public var aggregateReportURIs: [ReportURI] = []
    /// `ruf`: failure report addresses (the valid ones).
    public var failureReportURIs: [ReportURI] = []
    /// `fo`: failure reporting options, `0` by default.
    public var failureReportingOptions = ["0"]
    /// `rf`: failure report formats, `afrf` by default.
    public var reportFormats = ["afrf"]
    /// `ri`: seconds between aggregate reports, a day by default.
    public var reportInterval: UInt32 = 86_400
    /// True when `p` (or `sp`) was missing or invalid and `p=none` stands in for it because
    /// `rua` names a valid URI (§6.6.3 step 6.1).
    public var policyImplied = false

    /// §6.6.3 steps 2 and 4: a TXT record is a DMARC record when its first tag is `v=DMARC1`.
    public static func isDMARCRecord(_ text: String) -> Bool {
        guard let first = text.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first,
            let (name, value) = tag(first)
        else { return false }
        return name == "v" && value == "DMARC1"
    }

    public init(parsing text: String) throws(DMARCRecordError) {
        guard Self.isDMARCRecord(text) else { throw .notDMARC }
        var policy: Policy?
        var policyProblem: String? = "no p tag"
        var seen: Set<String> = []
        var subdomainProblem: String?
        self.policy = .none
        for part in text.split(separator: ";", omittingEmptySubsequences: false).dropFirst() {
            let trimmed = Self.trimmed(part)
            if trimmed.isEmpty { continue }  // a final ";" or ";;"
            guard let (name, value) = Self.tag(trimmed) else { continue }
            let repeated = !seen.insert(name).inserted
            switch name {
            case "p":
                policy = repeated ? nil : Policy(rawValue: value.lowercased())
                policyProblem = policy == nil ? "invalid p tag \"\(value)\"" : nil
            case "sp":
                subdomainPolicy = repeated ? nil : Policy(rawValue: value.lowercased())
                subdomainProblem = subdomainPolicy == nil ? "invalid sp tag \"\(value)\"" : nil
            case _ where repeated:
                continue  // the first of the optional tags counts
            case "rua":
                aggregateReportURIs = Self.uris(value)
            case "ruf":
                failureReportURIs = Self.uris(value)
            case "adkim":
                dkimAlignment = Alignment(rawValue: value.lowercased()) ?? .relaxed
            case "aspf":
                spfAlignment = Alignment(rawValue: value.lowercased()) ?? .relaxed
            case "pct":
                // dmarc-percent = "pct" *WSP "=" *WSP 1*3DIGIT, 0 to 100 (§6.3)
                if (1...3).contains(value.count), value.allSatisfy(\.isASCIIDigit), let number = Int(value),
                    number <= 100
                {
                    percent = number
                }
            case "fo":
                // dmarc-fo = "fo" *WSP "=" *WSP ( "0" / "1" / "d" / "s" ) *(*WSP ":" *WSP ( ... ))
                let options = value.split(separator: ":", omittingEmptySubsequences: false).map {
                    Self.trimmed($0).lowercased()
                }
                if options.allSatisfy({ ["0", "1", "d", "s"].contains($0) }) { failureReportingOptions = options }
            case "rf":
                let formats = value.split(separator: ":", omittingEmptySubsequences: false).map {
                    Self.trimmed($0).lowercased()
                }
                if formats.allSatisfy({ !$0.isEmpty }) { reportFormats = formats }
            case "ri":
                if value.allSatisfy(\.isASCIIDigit), let seconds = UInt32(value) { reportInterval = seconds }
            default:
                continue  // §6.3: unknown tags MUST be ignored
            }
        }
        if let policy, subdomainProblem == nil {
            self.policy = policy
            return
        }
        // §6.6.3 step 6: act as p=none when rua has a valid URI, else no DMARC at all.
        guard !aggregateReportURIs.isEmpty else {
            throw .invalidPolicy(policyProblem ?? subdomainProblem ?? "invalid policy")
        }
        self.policy = .none
        subdomainPolicy = nil
        policyImplied = true
    }

    /// `name *WSP "=" *WSP value` with the name in lower case; nil without "=" or a name.
    private static func tag(_ text: Substring) -> (String, String)? {
        guard let equals = text.firstIndex(of: "=") else { return nil }
        let name = trimmed(text[..<equals])
        guard !name.isEmpty else { return nil }
        return (name.lowercased(), String(trimmed(text[text.index(after: equals)...])))
    }

    // WSP = SP / HTAB
    private static func trimmed(_ text: Substring) -> Substring {
        var text = text
        while let first = text.first, first == " " || first == "\t" { text.removeFirst() }
        while let last = text.last, last == " " || last == "\t" { text.removeLast() }
        return text
    }

    /// The valid URIs of a `rua`/`ruf` list; commas inside a URI must be %-encoded (§6.4).
    private static func uris(_ value: String) -> [ReportURI] {
        value.split(separator: ",").compactMap { reportURI(trimmed($0)) }
    }

    // dmarc-uri = URI [ "!" 1*DIGIT [ "k" / "m" / "g" / "t" ] ]
    // URI = scheme ":" hier-part [ "?" query ] [ "#" fragment ]   (RFC 3986 §3)
    // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
    static func reportURI(_ text: Substring) -> ReportURI? {
        var uri = text
        var size: UInt64?
        if let bang = text.lastIndex(of: "!") {
            var digits = text[text.index(after: bang)...]
            var multiplier: UInt64 = 1
            if let unit = digits.last, let power = ["k": 1, "m": 2, "g": 3, "t": 4][unit.lowercased()] {
                multiplier = 1 << (10 * UInt64(power))
                digits = digits.dropLast()
            }
            if !digits.isEmpty, digits.count <= 12, digits.allSatisfy(\.isASCIIDigit), let value = UInt64(digits) {
                let (bytes, overflow) = value.multipliedReportingOverflow(by: multiplier)
                size = overflow ? .max : bytes
                uri = text[..<bang]
            }
        }
        guard let colon = uri.firstIndex(of: ":"), let first = uri.first, first.isASCII, first.isLetter,
            uri[..<colon].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "+-.".contains($0)) }),
            uri.index(after: colon) < uri.endIndex,
            uri.unicodeScalars.allSatisfy({ (0x21...0x7E).contains($0.value) })
        else { return nil }
        return ReportURI(uri: String(uri), maximumSize: size)
    }
}

/// Why a TXT record gives no usable DMARC policy (RFC 7489 §6.6.3).
public enum DMARCRecordError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The record does not start with `v=DMARC1`.
    case notDMARC
    /// `p` missing or invalid, or `sp` invalid, and no valid `rua` to fall back on.
    case invalidPolicy(String)

    public var description: String {
        switch self {
        case .notDMARC: "not a DMARC record (no leading v=DMARC1)"
        case .invalidPolicy(let reason): "unusable DMARC record: \(reason)"
        }
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}
