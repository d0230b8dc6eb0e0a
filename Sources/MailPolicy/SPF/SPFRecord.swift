/// One SPF record (RFC 7208 §4.5, §4.6.1), parsed whole before any of it is evaluated: §4.6
/// makes a syntax error anywhere, even after the term that would match, a permerror.
///
///     record = version terms *SP
///     version = "v=spf1"
///     terms = *( 1*SP ( directive / modifier ) )
struct SPFRecord: Sendable, Hashable {
    // qualifier = "+" / "-" / "?" / "~"
    enum Qualifier: Character, Sendable, Hashable {
        case pass = "+"
        case fail = "-"
        case softfail = "~"
        case neutral = "?"

        var result: SPFResult {
            switch self {
            case .pass: .pass
            case .fail: .fail
            case .softfail: .softfail
            case .neutral: .neutral
            }
        }
    }

    // mechanism = ( all / include / a / mx / ptr / ip4 / ip6 / exists )
    enum Mechanism: Sendable, Hashable {
        case all
        case include(SPFMacroString)
        /// `a [":" domain-spec] [dual-cidr-length]`; no domain-spec means the current domain.
        case a(SPFMacroString?, ipv4Prefix: Int, ipv6Prefix: Int)
        case mx(SPFMacroString?, ipv4Prefix: Int, ipv6Prefix: Int)
        case ptr(SPFMacroString?)
        case ip4(IPAddress, prefix: Int)
        case ip6(IPAddress, prefix: Int)
        case exists(SPFMacroString)

        /// §4.6.4: the terms that count against the limit of 10.
        var queriesDNS: Bool {
            switch self {
            case .include, .a, .mx, .ptr, .exists: true
            case .all, .ip4, .ip6: false
            }
        }
    }

    // directive = [ qualifier ] mechanism
    struct Directive: Sendable, Hashable {
        var qualifier: Qualifier
        var mechanism: Mechanism
        /// The term as written, for `mechanism=` in Received-SPF.
        var text: String
    }

    var directives: [Directive] = []
    /// §6.1 `redirect=`; at most once.
    var redirect: SPFMacroString?
    /// §6.2 `exp=`; at most once.
    var explanation: SPFMacroString?

    /// §6.1: a redirect is ignored when the record has an "all" mechanism anywhere.
    var hasAll: Bool { directives.contains { $0.mechanism == .all } }

    /// §4.5: a TXT record is an SPF record when it starts with `v=spf1` (any case) followed by
    /// a space or its end, so `v=spf10` is not one.
    static func isSPFRecord(_ text: String) -> Bool {
        let bytes = Array(text.utf8.prefix(7))
        guard bytes.count >= 6, String(decoding: bytes[..<6], as: UTF8.self).lowercased() == "v=spf1" else {
            return false
        }
        return bytes.count == 6 || bytes[6] == UInt8(ascii: " ")
    }

    init(parsing text: String) throws(SPFSyntaxError) {
        guard Self.isSPFRecord(text) else { throw SPFSyntaxError("not an SPF record") }
        let body = text.unicodeScalars.dropFirst(6)
        // §4.6.1: terms are separated by spaces only; §3.1: records are 7-bit ASCII.
        if let bad = body.first(where: { $0 != " " && !(0x21...0x7E).contains($0.value) }) {
            throw SPFSyntaxError("character U+\(String(bad.value, radix: 16, uppercase: true)) in the record")
        }
        for term in Substring(body).split(separator: " ") {
            try parse(term)
        }
    }

    private mutating func parse(_ term: Substring) throws(SPFSyntaxError) {
        // modifier = redirect / explanation / unknown-modifier; unknown-modifier = name "=" macro-string
        if let equals = term.firstIndex(of: "="), Self.isName(term[..<equals]) {
            let value = term[term.index(after: equals)...]
            switch term[..<equals].lowercased() {
            case "redirect":
                // §6: redirect and exp at most once each. Known names never fall back to
                // unknown-modifier, so a bad domain-spec here is an error (test suite 6.1/2).
                guard redirect == nil else { throw SPFSyntaxError("redirect= appears twice") }
                redirect = try SPFMacroString.domainSpec(value)
            case "exp":
                guard explanation == nil else { throw SPFSyntaxError("exp= appears twice") }
                explanation = try SPFMacroString.domainSpec(value)
            default:
                // §6: unknown modifiers are ignored, but their macro-string must still parse.
                _ = try SPFMacroString(parsing: value, explanation: true)
            }
            return
        }
        var rest = term[...]
        var qualifier = Qualifier.pass
        if let first = rest.first, let explicit = Qualifier(rawValue: first) {
            qualifier = explicit
            rest.removeFirst()
        }
        let nameEnd = rest.firstIndex { $0 == ":" || $0 == "/" } ?? rest.endIndex
        let argument = rest[nameEnd...]
        let mechanism: Mechanism
        switch rest[..<nameEnd].lowercased() {
        case "all":
            // all = "all"
            guard argument.isEmpty else { throw SPFSyntaxError("\"all\" takes no argument: \(term)") }
            mechanism = .all
        case "include":
            // include = "include" ":" domain-spec
            mechanism = .include(try SPFMacroString.domainSpec(try Self.required(argument, term)))
        case "a":
            // a = "a" [ ":" domain-spec ] [ dual-cidr-length ]
            let (spec, v4, v6) = try Self.domainAndCIDR(argument, term)
            mechanism = .a(spec, ipv4Prefix: v4, ipv6Prefix: v6)
        case "mx":
            // mx = "mx" [ ":" domain-spec ] [ dual-cidr-length ]
            let (spec, v4, v6) = try Self.domainAndCIDR(argument, term)
            mechanism = .mx(spec, ipv4Prefix: v4, ipv6Prefix: v6)
        case "ptr":
            // ptr = "ptr" [ ":" domain-spec ]
            if argument.isEmpty {
                mechanism = .ptr(nil)
            } else {
                mechanism = .ptr(try SPFMacroString.domainSpec(try Self.required(argument, term)))
            }
        case "ip4":
            // ip4 = "ip4" ":" ip4-network [ ip4-cidr-length ]
            let (address, prefix) = try Self.network(try Self.required(argument, term), ipv6: false, term)
            mechanism = .ip4(address, prefix: prefix)
        case "ip6":
            // ip6 = "ip6" ":" ip6-network [ ip6-cidr-length ]
            let (address, prefix) = try Self.network(try Self.required(argument, term), ipv6: true, term)
            mechanism = .ip6(address, prefix: prefix)
        case "exists":
            // exists = "exists" ":" domain-spec
            mechanism = .exists(try SPFMacroString.domainSpec(try Self.required(argument, term)))
        default:
            // §5: an unknown mechanism is a permerror.
            throw SPFSyntaxError("unknown mechanism \"\(term)\"")
        }
        directives.append(Directive(qualifier: qualifier, mechanism: mechanism, text: String(term)))
    }

    // name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )
    private static func isName(_ text: Substring) -> Bool {
        guard let first = text.unicodeScalars.first, Self.isAlpha(first) else { return false }
        return text.unicodeScalars.allSatisfy {
            isAlpha($0) || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0)
        }
    }

    private static func isAlpha(_ scalar: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar)
    }

    /// The text after the ":" that the mechanism requires.
    private static func required(_ argument: Substring, _ term: Substring) throws(SPFSyntaxError) -> Substring {
        guard argument.first == ":" else { throw SPFSyntaxError("\"\(term)\" needs \":\" and an argument") }
        return argument.dropFirst()
    }

    // dual-cidr-length = [ ip4-cidr-length ] [ "/" ip6-cidr-length ]
    // A domain-spec cannot end in "/" DIGIT (it ends in a toplabel or a macro), so the CIDR
    // lengths are whatever "/" DIGIT groups end the argument.
    private static func domainAndCIDR(
        _ argument: Substring, _ term: Substring
    ) throws(SPFSyntaxError) -> (SPFMacroString?, Int, Int) {
        var body = argument
        var v4 = 32
        var v6 = 128
        if let (before, digits) = trailingLength(body) {
            if before.hasSuffix("/") {
                v6 = try length(digits, maximum: 128, term)
                body = before.dropLast()
                if let (rest, digits4) = trailingLength(body) {
                    v4 = try length(digits4, maximum: 32, term)
                    body = rest
                }
            } else {
                v4 = try length(digits, maximum: 32, term)
                body = before
            }
        }
        if body.isEmpty { return (nil, v4, v6) }
        return (try SPFMacroString.domainSpec(try required(body, term)), v4, v6)
    }

    /// `text` split before a final `"/" 1*DIGIT`: the text before the slash and the digits.
    private static func trailingLength(_ text: Substring) -> (Substring, Substring)? {
        let count = text.reversed().prefix { ("0"..."9").contains($0) }.count
        guard count > 0 else { return nil }
        let digits = text.suffix(count)
        guard digits.startIndex > text.startIndex else { return nil }
        let slash = text.index(before: digits.startIndex)
        guard text[slash] == "/" else { return nil }
        return (text[..<slash], digits)
    }

    // ip4-cidr-length = "/" ("0" / %x31-39 0*1DIGIT) ; value range 0-32
    // ip6-cidr-length = "/" ("0" / %x31-39 0*2DIGIT) ; value range 0-128
    private static func length(_ digits: Substring, maximum: Int, _ term: Substring) throws(SPFSyntaxError) -> Int {
        guard digits.count <= 3, digits == "0" || digits.first != "0", let value = Int(digits), value <= maximum else {
            throw SPFSyntaxError("invalid CIDR length in \"\(term)\"")
        }
        return value
    }

    // ip4-network = qnum "." qnum "." qnum "." qnum ; ip6-network = <RFC 4291 §2.2 text>
    private static func network(
        _ text: Substring, ipv6: Bool, _ term: Substring
    ) throws(SPFSyntaxError) -> (IPAddress, Int) {
        var address = text
        var prefix = ipv6 ? 128 : 32
        if let slash = text.firstIndex(of: "/") {
            address = text[..<slash]
            prefix = try length(text[text.index(after: slash)...], maximum: prefix, term)
        }
        // IPAddress reads text with a colon as IPv6, without as IPv4.
        guard address.contains(":") == ipv6, let parsed = IPAddress(address) else {
            throw SPFSyntaxError("invalid \(ipv6 ? "IPv6" : "IPv4") network in \"\(term)\"")
        }
        return (parsed, prefix)
    }
}

extension IPAddress {
    /// Whether `self` and `other` agree in their first `prefix` bits; false when one is IPv4
    /// and the other IPv6 (RFC 7208 §5.6: the CIDR lengths belong to one family each).
    func sharesPrefix(_ prefix: Int, with other: IPAddress) -> Bool {
        switch (self, other) {
        case (.v4(let a), .v4(let b)):
            guard prefix > 0 else { return true }
            return (a ^ b) >> (32 - min(prefix, 32)) == 0
        case (.v6(let ah, let al), .v6(let bh, let bl)):
            guard prefix > 0 else { return true }
            if prefix <= 64 { return (ah ^ bh) >> (64 - prefix) == 0 }
            guard ah == bh else { return false }
            return (al ^ bl) >> (128 - prefix) == 0
        default:
            return false
        }
    }
}
