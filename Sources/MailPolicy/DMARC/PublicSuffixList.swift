import Foundation

/// The Public Suffix List (https://publicsuffix.org/list/): the names under which anyone may
/// register a domain (`com`, `co.uk`, `github.io`), and so the Organizational Domain of DMARC
/// (RFC 7489 §3.2).
///
/// The rules of both sections (ICANN and PRIVATE) are loaded into one dictionary, so a lookup
/// costs one hash probe per label of the name. Rules written as U-labels are also kept as
/// A-labels, and names are looked up as A-labels: results come back in A-label form, lower case.
public struct PublicSuffixList: Sendable {
    /// Where Debian's `publicsuffix` package installs the list.
    public static let debianPath = "/usr/share/publicsuffix/public_suffix_list.dat"

    private struct Kinds: OptionSet, Sendable {
        let rawValue: UInt8
        /// `example.com`: the name itself is a public suffix.
        static let suffix = Kinds(rawValue: 1)
        /// `*.example.com`: every child of the name is a public suffix.
        static let wildcard = Kinds(rawValue: 2)
        /// `!www.example.com`: the name is not a public suffix, whatever a wildcard says.
        static let exception = Kinds(rawValue: 4)
    }

    /// Rule name (without `*.` or `!`) → the kinds of rule written for it.
    private var rules: [String: Kinds] = [:]

    /// The number of rules read.
    public private(set) var count = 0

    /// Parses the list's text format: one rule per line (its first whitespace-separated word),
    /// `//` comments, blank lines. Lines that are no valid rule are skipped.
    public init(text: String) {
        for line in text.split(whereSeparator: \.isNewline) {
            guard let rule = line.split(whereSeparator: \.isWhitespace).first, !rule.hasPrefix("//") else { continue }
            var name = Substring(rule)
            var kind = Kinds.suffix
            if name.hasPrefix("!") {
                kind = .exception
                name = name.dropFirst()
            } else if name.hasPrefix("*.") {
                kind = .wildcard
                name = name.dropFirst(2)
            }
            // Wildcards elsewhere than in front are not part of the format.
            guard !name.isEmpty, !name.contains("*"), !name.hasPrefix("!"),
                let ascii = Punycode.asciiName(String(name)), !ascii.split(separator: ".").isEmpty
            else { continue }
            rules[ascii, default: []].insert(kind)
            count += 1
        }
    }

    /// Reads the list from a file, Debian's copy by default.
    public init(contentsOfFile path: String = PublicSuffixList.debianPath) throws {
        self.init(text: try String(contentsOfFile: path, encoding: .utf8))
    }

    /// The public suffix of `domain` (`co.uk` for `www.example.co.uk`), by the list's
    /// algorithm: an exception rule prevails, else the matching rule with the most labels,
    /// else the implicit rule `*` (the last label). Nil when `domain` is not a valid name.
    public func publicSuffix(of domain: String) -> String? {
        guard let labels = Self.labels(domain) else { return nil }
        return labels.suffix(suffixLength(labels)).joined(separator: ".")
    }

    /// The public suffix and one more label (`example.co.uk` for `www.example.co.uk`); nil
    /// when `domain` is itself a public suffix or not a valid name.
    public func registrableDomain(_ domain: String) -> String? {
        guard let labels = Self.labels(domain) else { return nil }
        let length = suffixLength(labels)
        guard labels.count > length else { return nil }
        return labels.suffix(length + 1).joined(separator: ".")
    }

    /// The Organizational Domain of RFC 7489 §3.2: the registrable domain; for a name that is
    /// itself a public suffix (which §3.2 leaves open), the name itself. Nil for an invalid name.
    public func organizationalDomain(of domain: String) -> String? {
        guard let labels = Self.labels(domain) else { return nil }
        return registrableDomain(domain) ?? labels.joined(separator: ".")
    }

    /// How many labels at the end of `labels` form the public suffix.
    private func suffixLength(_ labels: [String]) -> Int {
        var longest = 1  // the implicit "*" rule
        var exception: Int?
        for start in labels.indices {
            guard let kinds = rules[labels[start...].joined(separator: ".")] else { continue }
            let length = labels.count - start
            if kinds.contains(.exception) { exception = max(exception ?? 0, length - 1) }
            if kinds.contains(.suffix) { longest = max(longest, length) }
            if kinds.contains(.wildcard) && start > 0 { longest = max(longest, length + 1) }
        }
        return exception ?? longest
    }

    /// The labels of `domain` in lower-case A-label form, a final dot ignored; nil for an empty
    /// label, a label over 63 octets or a name over 253.
    private static func labels(_ domain: String) -> [String]? {
        var name = Substring(domain)
        if name.hasSuffix(".") { name = name.dropLast() }
        guard !name.isEmpty, let ascii = Punycode.asciiName(String(name)), ascii.utf8.count <= 253 else { return nil }
        let labels = ascii.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard labels.allSatisfy({ (1...63).contains($0.utf8.count) }) else { return nil }
        return labels
    }
}
