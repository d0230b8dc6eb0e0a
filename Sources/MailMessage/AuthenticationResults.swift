/// The `Authentication-Results:` header field of RFC 8601: what this host (the authserv-id)
/// found when it checked SPF, DKIM, DMARC and the rest.
///
///     authres-payload = [CFWS] authserv-id [ CFWS authres-version ]
///                       ( no-result / 1*resinfo ) [CFWS] CRLF
///     no-result = [CFWS] ";" [CFWS] "none"
///     resinfo = [CFWS] ";" methodspec [ CFWS reasonspec ] [ CFWS 1*propspec ]
///     methodspec = [CFWS] method [CFWS] "=" [CFWS] result
///     reasonspec = "reason" [CFWS] "=" [CFWS] value
///     propspec = ptype [CFWS] "." [CFWS] property [CFWS] "=" pvalue
///     pvalue = [CFWS] ( value / [ [ local-part ] "@" ] domain-name ) [CFWS]
///
/// `value` is a MIME token or a quoted-string (RFC 2045 §5.1).
public struct AuthenticationResults: Sendable, Hashable {
    /// One property of a result: `smtp.mailfrom=example.com`, `header.d=example.com`.
    public struct Property: Sendable, Hashable {
        /// `smtp`, `header`, `body` or `policy` (§2.3).
        public var ptype: String
        /// `mailfrom`, `helo`, `d`, `s`, `from`, `iprev`, `auth` …
        public var property: String
        public var value: String

        public init(ptype: String, property: String, value: String) {
            self.ptype = ptype
            self.property = property
            self.value = value
        }

        /// `smtp.<property>`: a parameter of an SMTP command (`smtp.mailfrom`, `smtp.helo`,
        /// `smtp.auth`).
        public static func smtp(_ property: String, _ value: String) -> Property {
            Property(ptype: "smtp", property: property, value: value)
        }

        /// `header.<property>`: taken from a header field or a signature tag (`header.d`,
        /// `header.s`, `header.from`, `header.i`, `header.b`).
        public static func header(_ property: String, _ value: String) -> Property {
            Property(ptype: "header", property: property, value: value)
        }

        /// `policy.<property>`: a local policy fact (`policy.iprev`).
        public static func policy(_ property: String, _ value: String) -> Property {
            Property(ptype: "policy", property: property, value: value)
        }
    }

    /// One `resinfo`: a method, its result, and what it was about.
    public struct MethodResult: Sendable, Hashable {
        /// `spf`, `dkim`, `dmarc`, `iprev`, `auth` … (§2.7), optionally `method/version`.
        public var method: String
        /// `pass`, `fail`, `none`, `temperror` … as the method defines.
        public var result: String
        /// `reason=`: free text for humans.
        public var reason: String?
        /// A comment after the result, as in `dkim=pass (2048-bit key)`.
        public var comment: String?
        public var properties: [Property]

        public init(
            method: String, result: String, reason: String? = nil, comment: String? = nil, properties: [Property] = []
        ) {
            self.method = method
            self.result = result
            self.reason = reason
            self.comment = comment
            self.properties = properties
        }
    }

    /// The name of this host as a receiver of mail (§2.5): usually its host name.
    public var authservID: String
    public var results: [MethodResult]

    public init(authservID: String, results: [MethodResult]) {
        self.authservID = authservID
        self.results = results
    }

    /// The whole field, `Authentication-Results: ...` and a final CRLF, each result on its own
    /// line and long results folded before 78 columns where their words allow:
    ///
    ///     Authentication-Results: mx.example.org;
    ///     	spf=pass smtp.mailfrom=example.com;
    ///     	dkim=pass header.d=example.com header.s=s2026
    ///
    /// "none" stands for an empty list of results (§2.2). Values that are not tokens (and
    /// property values that are not `[local-part "@"] domain-name` either) are quoted.
    public var field: String {
        var lines: [String] = []
        let head = "Authentication-Results: " + Self.value(authservID) + ";"
        guard !results.isEmpty else { return head + " none\r\n" }
        lines.append(head)
        for (index, result) in results.enumerated() {
            var words = ["\(Self.keyword(result.method))=\(Self.keyword(result.result))"]
            if let comment = result.comment { words += Self.comment(comment).split(separator: " ").map(String.init) }
            if let reason = result.reason { words.append("reason=" + Self.value(reason)) }
            for property in result.properties {
                words.append(
                    "\(Self.keyword(property.ptype)).\(Self.keyword(property.property))=\(Self.propertyValue(property.value))"
                )
            }
            if index < results.count - 1 { words[words.count - 1] += ";" }
            lines += Self.wrap(words)
        }
        return lines.map { $0 + "\r\n" }.joined()
    }

    /// The authserv-id of a received `Authentication-Results` field's value (the text after
    /// the colon, folded or not), unquoted, after any comments; nil when the value does not
    /// start with one. A receiver removes the fields that claim its own authserv-id (§5),
    /// comparing case-insensitively.
    public static func authservID(ofFieldValue value: String) -> String? {
        var scanner = Scanner(Array(value.utf8))
        scanner.skipCFWS()
        // Whatever follows (a version, ";", or junk): a field that starts with an id claims it,
        // and a lenient reader might believe the rest.
        guard let id = scanner.value(), !id.isEmpty else { return nil }
        return id
    }

    // MARK: - Writing

    // RFC 2045 §5.1: token := 1*<any (US-ASCII) CHAR except SPACE, CTLs, or tspecials>
    // tspecials := "(" / ")" / "<" / ">" / "@" / "," / ";" / ":" / "\" / <"> / "/" / "[" / "]" / "?" / "="
    static func isToken(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy(isTokenByte)
    }

    private static func isTokenByte(_ byte: UInt8) -> Bool {
        byte > 0x20 && byte < 0x7F && !Array("()<>@,;:\\\"/[]?=".utf8).contains(byte)
    }

    /// A token as it is; anything else as a quoted-string.
    static func value(_ text: String) -> String {
        isToken(text) ? text : quoted(text)
    }

    /// Method, result, ptype and property are keywords (letters, digits, "-", and "/" before a
    /// method version); they come from code, but a stray character must not break the field.
    private static func keyword(_ text: String) -> String {
        let kept = text.unicodeScalars.filter {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0)
                || "-_/".unicodeScalars.contains($0)
        }
        return kept.isEmpty ? "unknown" : String(String.UnicodeScalarView(kept))
    }

    /// `pvalue`: a token, or `[local-part] "@" domain-name` with a dot-atom local part, as it
    /// is; anything else quoted.
    static func propertyValue(_ text: String) -> String {
        if isToken(text) { return text }
        if let at = text.lastIndex(of: "@") {
            let local = text[..<at]
            let domain = text[text.index(after: at)...]
            let dotAtom = { (part: Substring) in
                part.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { atom in
                    !atom.isEmpty && atom.utf8.allSatisfy(isAtext)
                }
            }
            if (local.isEmpty || dotAtom(local)) && !domain.isEmpty && dotAtom(domain) { return text }
        }
        return quoted(text)
    }

    // atext (RFC 5322 §3.2.3)
    private static func isAtext(_ byte: UInt8) -> Bool {
        (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || (0x30...0x39).contains(byte)
            || Array("!#$%&'*+-/=?^_`{|}~".utf8).contains(byte)
    }

    /// A quoted-string (RFC 5322 §3.2.4): `"` and `\` escaped, controls (CR, LF) as `?`.
    private static func quoted(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"", "\\": result += "\\" + String(scalar)
            case _ where scalar.value < 0x20 || scalar.value == 0x7F: result += "?"
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }

    /// A comment (RFC 5322 §3.2.2) with parentheses and backslashes escaped, controls as `?`.
    private static func comment(_ text: String) -> String {
        var result = "("
        for scalar in text.unicodeScalars {
            switch scalar {
            case "(", ")", "\\": result += "\\" + String(scalar)
            case _ where scalar.value < 0x20 || scalar.value == 0x7F: result += "?"
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + ")"
    }

    /// One result's words on continuation lines (starting with a tab, RFC 5322 §2.2.3) of at
    /// most 78 octets where the words allow (§2.1.1).
    private static func wrap(_ words: [String]) -> [String] {
        var lines: [String] = []
        var line = ""
        for word in words {
            if line.isEmpty {
                line = "\t" + word
            } else if line.utf8.count + 1 + word.utf8.count > 78 {
                lines.append(line)
                line = "\t" + word
            } else {
                line += " " + word
            }
        }
        if !line.isEmpty { lines.append(line) }
        return lines
    }

    // MARK: - Reading

    /// Just enough of RFC 5322's lexical rules to find the authserv-id: CFWS (with nested
    /// comments and quoted-pairs, folding included) and a token or quoted-string.
    private struct Scanner {
        let bytes: [UInt8]
        var index = 0

        init(_ bytes: [UInt8]) { self.bytes = bytes }

        var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

        // CFWS = (1*([FWS] comment) [FWS]) / FWS; comment = "(" *([FWS] ccontent) [FWS] ")"
        mutating func skipCFWS() {
            var depth = 0
            while let byte = peek {
                if byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\r")
                    || byte == UInt8(ascii: "\n")
                {
                    index += 1
                } else if byte == UInt8(ascii: "(") {
                    depth += 1
                    index += 1
                } else if depth > 0 {
                    if byte == UInt8(ascii: ")") { depth -= 1 }
                    if byte == UInt8(ascii: "\\") { index += 1 }  // quoted-pair
                    index += 1
                } else {
                    return
                }
            }
        }

        /// A token (its UTF-8 bytes allowed too, RFC 8616) or a quoted-string, unquoted.
        mutating func value() -> String? {
            guard let first = peek else { return nil }
            if first == UInt8(ascii: "\"") {
                index += 1
                var content: [UInt8] = []
                while let byte = peek {
                    index += 1
                    switch byte {
                    case UInt8(ascii: "\""):
                        return String(decoding: content, as: UTF8.self)
                    case UInt8(ascii: "\\"):
                        guard let escaped = peek else { return nil }
                        content.append(escaped)
                        index += 1
                    case UInt8(ascii: "\r"), UInt8(ascii: "\n"):
                        continue  // folding inside the quotes
                    default:
                        content.append(byte)
                    }
                }
                return nil  // unterminated
            }
            let start = index
            while let byte = peek, AuthenticationResults.isTokenByte(byte) || byte >= 0x80 { index += 1 }
            return index > start ? String(decoding: bytes[start..<index], as: UTF8.self) : nil
        }
    }
}
