import DNSClient

/// Why an SPF record (or an explanation string) does not follow the grammar of RFC 7208:
/// `check_host()` answers "permerror" (§4.6), and an explanation is dropped (§6.2).
struct SPFSyntaxError: Error, Sendable, Hashable, CustomStringConvertible {
    var description: String

    init(_ description: String) { self.description = description }
}

/// A macro-string of RFC 7208 §7.1, parsed once and expanded for each check:
///
///     macro-string = *( macro-expand / macro-literal )
///     macro-expand = ( "%{" macro-letter transformers *delimiter "}" )
///                    / "%%" / "%_" / "%-"
///     macro-literal = %x21-24 / %x26-7E
///     transformers = *DIGIT [ "r" ]
///     delimiter = "." / "-" / "+" / "," / "/" / "_" / "="
struct SPFMacroString: Sendable, Hashable, CustomStringConvertible {
    enum Token: Sendable, Hashable {
        case literal(String)
        /// `%%`, `%_` and `%-`: macro-expands standing for fixed text (`%`, a space, `%20`).
        case escape(String)
        case macro(Macro)
    }

    /// `%{` macro-letter transformers *delimiter `}`.
    struct Macro: Sendable, Hashable {
        var letter: Letter
        /// An upper-case letter: the value is URL-escaped after the transformers (§7.3).
        var urlEscaped: Bool
        /// The DIGIT transformer: keep this many right-hand parts (at least one).
        var rightParts: Int?
        var reversed: Bool
        /// Where the value is split; `.` when none is given (§7.3).
        var delimiters: Set<Character>
    }

    /// RFC 7208 §7.2; `c`, `r` and `t` only in explanation text.
    enum Letter: Character, Sendable, Hashable {
        case sender = "s"
        case localPart = "l"
        case senderDomain = "o"
        case domain = "d"
        case ip = "i"
        case validatedName = "p"
        case ipVersion = "v"
        case helo = "h"
        case clientIP = "c"
        case receiver = "r"
        case timestamp = "t"

        var onlyInExplanations: Bool { self == .clientIP || self == .receiver || self == .timestamp }
    }

    let tokens: [Token]
    /// The text as written in the record.
    let description: String

    /// Whether expanding needs the validated domain name of the client (`%{p}`, §5.5 lookups).
    var usesValidatedName: Bool {
        tokens.contains {
            if case .macro(let macro) = $0 { return macro.letter == .validatedName }
            return false
        }
    }

    /// Parses a macro-string. `explanation` is the explain-string of §6.2 instead, which also
    /// allows spaces and the letters `c`, `r`, `t` (§7.2).
    init(parsing text: Substring, explanation: Bool = false) throws(SPFSyntaxError) {
        var tokens: [Token] = []
        var literal = ""
        var scalars = text.unicodeScalars[...]
        func flush() {
            if !literal.isEmpty { tokens.append(.literal(literal)) }
            literal = ""
        }
        while let scalar = scalars.popFirst() {
            if scalar != "%" {
                let visible = (0x21...0x7E).contains(scalar.value)
                guard visible || (explanation && scalar == " ") else {
                    throw SPFSyntaxError(
                        "character U+\(String(scalar.value, radix: 16, uppercase: true)) in \"\(text)\"")
                }
                literal.unicodeScalars.append(scalar)
                continue
            }
            // §7.1: a "%" not followed by "{", "%", "-" or "_" is a syntax error.
            switch scalars.popFirst() {
            case "%":
                flush()
                tokens.append(.escape("%"))
            case "_":
                flush()
                tokens.append(.escape(" "))
            case "-":
                flush()
                tokens.append(.escape("%20"))
            case "{":
                flush()
                tokens.append(.macro(try Self.macro(&scalars, in: text, explanation: explanation)))
            default:
                throw SPFSyntaxError("\"%\" not followed by \"{\", \"%\", \"_\" or \"-\" in \"\(text)\"")
            }
        }
        flush()
        self.tokens = tokens
        self.description = String(text)
    }

    /// A domain-spec (RFC 7208 §7.1): a macro-string that ends in a macro-expand or in a
    /// literal `"." toplabel ["."]`.
    ///
    ///     domain-spec = macro-string domain-end
    ///     domain-end = ( "." toplabel [ "." ] ) / macro-expand
    static func domainSpec(_ text: Substring) throws(SPFSyntaxError) -> SPFMacroString {
        guard !text.isEmpty else { throw SPFSyntaxError("empty domain-spec") }
        let spec = try SPFMacroString(parsing: text)
        guard case .literal(let tail) = spec.tokens.last else { return spec }
        var end = Substring(tail)
        if end.hasSuffix(".") { end = end.dropLast() }
        guard let dot = end.lastIndex(of: "."), isTopLabel(end[end.index(after: dot)...]) else {
            throw SPFSyntaxError("domain-spec \"\(text)\" does not end in a valid top label")
        }
        return spec
    }

    // toplabel = ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" ) alphanum )
    static func isTopLabel(_ label: Substring) -> Bool {
        guard let first = label.first, let last = label.last, first.isASCIIAlphanumeric,
            last.isASCIIAlphanumeric, label.allSatisfy({ $0.isASCIIAlphanumeric || $0 == "-" })
        else { return false }
        return label.contains("-") || label.contains(where: \.isASCIILetter)
    }

    // "%{" macro-letter transformers *delimiter "}", after the "%{".
    private static func macro(
        _ scalars: inout Substring.UnicodeScalarView.SubSequence, in text: Substring, explanation: Bool
    ) throws(SPFSyntaxError) -> Macro {
        guard let first = scalars.popFirst(), first.isASCII,
            let letter = Letter(rawValue: Character(first).lowercased().first!)
        else { throw SPFSyntaxError("unknown macro letter in \"\(text)\"") }
        guard explanation || !letter.onlyInExplanations else {
            throw SPFSyntaxError("macro %{\(letter.rawValue)} is allowed only in explanations (\"\(text)\")")
        }
        var digits = 0
        var digitCount = 0
        while let next = scalars.first, ("0"..."9").contains(next) {
            scalars.removeFirst()
            digitCount += 1
            // More parts than any name has: keeping "all of them" needs no exact value.
            digits = min(digits * 10 + Int(next.value - 48), 1_000)
        }
        // §7.3: "If a DIGIT is specified, the value MUST be at least one."
        guard digitCount == 0 || digits > 0 else { throw SPFSyntaxError("macro keeps zero parts in \"\(text)\"") }
        var reversed = false
        if let next = scalars.first, next == "r" || next == "R" {
            scalars.removeFirst()
            reversed = true
        }
        var delimiters: Set<Character> = []
        while let next = scalars.popFirst() {
            if next == "}" {
                return Macro(
                    letter: letter, urlEscaped: first.properties.isUppercase, rightParts: digitCount > 0 ? digits : nil,
                    reversed: reversed, delimiters: delimiters)
            }
            guard ".-+,/_=".unicodeScalars.contains(next) else {
                throw SPFSyntaxError("invalid macro delimiter in \"\(text)\"")
            }
            delimiters.insert(Character(next))
        }
        throw SPFSyntaxError("unterminated macro in \"\(text)\"")
    }
}

/// What the macro letters stand for during one check (RFC 7208 §7.2).
struct SPFMacroValues {
    /// `<sender>`: the reverse path, or postmaster@<HELO> for a null one.
    var sender: String
    var localPart: String
    var senderDomain: String
    /// `<domain>`: the domain whose record is being evaluated.
    var domain: String
    var client: IPAddress
    var helo: String
    var receiver: String
    var secondsSince1970: Int
    /// The `%{p}` value, looked up beforehand when the string uses it.
    var validatedName = "unknown"

    func value(of letter: SPFMacroString.Letter) -> String {
        switch letter {
        case .sender: sender
        case .localPart: localPart
        case .senderDomain: senderDomain
        case .domain: domain
        case .ip: SPFMacroValues.dotted(client)
        case .validatedName: validatedName
        case .ipVersion: client.isIPv4 ? "in-addr" : "ip6"
        case .helo: helo
        case .clientIP: client.description
        case .receiver: receiver
        case .timestamp: String(secondsSince1970)
        }
    }

    /// `%{i}`: the dotted quad for IPv4, and for IPv6 the 32 nibbles separated by dots (§7.3).
    static func dotted(_ address: IPAddress) -> String {
        guard !address.isIPv4 else { return address.description }
        let digits = Array("0123456789abcdef")
        return address.bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0x0F)]] }.map(String.init)
            .joined(separator: ".")
    }
}

extension SPFMacroString {
    /// How an expansion is used: as a name to look up (only its last 253 octets can matter,
    /// §7.3) or as explanation text (its first `SPFLimits.explanationLength` octets).
    enum Use { case domainName, explanation }

    /// The expanded text. For `.domainName`, the result is already truncated from the left as
    /// §7.3 says and has no trailing dot.
    func expand(_ values: SPFMacroValues, for use: Use) -> String {
        var output = ""
        for token in tokens {
            switch token {
            case .literal(let text), .escape(let text): output += text
            case .macro(let macro): output += Self.expand(macro, values)
            }
            // Bound the work a hostile record can cause: keep only what can still matter.
            if output.utf8.count > 4 * SPFLimits.explanationLength {
                switch use {
                case .domainName: output = String(output.suffix(2 * SPFLimits.domainNameLength))
                case .explanation: break
                }
            }
            if use == .explanation, output.utf8.count >= SPFLimits.explanationLength { break }
        }
        switch use {
        case .domainName:
            return Self.truncatedName(output)
        case .explanation:
            guard output.utf8.count > SPFLimits.explanationLength else { return output }
            return String(output.unicodeScalars.prefix(SPFLimits.explanationLength))
        }
    }

    private static func expand(_ macro: Macro, _ values: SPFMacroValues) -> String {
        let value = values.value(of: macro.letter)
        let delimiters = macro.delimiters.isEmpty ? ["."] : macro.delimiters
        var parts = value.split(omittingEmptySubsequences: false, whereSeparator: delimiters.contains)
        if macro.reversed { parts.reverse() }
        if let keep = macro.rightParts, keep < parts.count { parts = Array(parts.suffix(keep)) }
        let joined = parts.joined(separator: ".")
        return macro.urlEscaped ? urlEscaped(joined) : joined
    }

    /// §7.3: escape every octet outside RFC 3986's `unreserved` (ALPHA DIGIT "-" "." "_" "~").
    static func urlEscaped(_ text: String) -> String {
        let hex = Array("0123456789ABCDEF")
        var result = ""
        for byte in text.utf8 {
            let character = Character(Unicode.Scalar(byte))
            if byte < 0x80 && (character.isASCIIAlphanumeric || "-._~".contains(character)) {
                result.append(character)
            } else {
                result += "%" + String(hex[Int(byte >> 4)]) + String(hex[Int(byte & 0x0F)])
            }
        }
        return result
    }

    /// §7.3: a name longer than 253 characters loses labels from the left until it fits.
    /// A trailing dot is dropped first: it only marks the name as absolute (test suite 7.1/16).
    static func truncatedName(_ name: String) -> String {
        var name = Substring(name)
        if name.hasSuffix(".") { name = name.dropLast() }
        while name.utf8.count > SPFLimits.domainNameLength {
            guard let dot = name.firstIndex(of: ".") else { return "" }
            name = name[name.index(after: dot)...]
        }
        return String(name)
    }
}

extension Character {
    fileprivate var isASCIILetter: Bool { isASCII && isLetter }
    fileprivate var isASCIIAlphanumeric: Bool { isASCII && (isLetter || isNumber) }
}
