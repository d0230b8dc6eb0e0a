/// The name syntax the configuration checks: domains, local parts, DKIM selectors.
enum DomainSyntax {
    // Domain     = sub-domain *("." sub-domain)            (RFC 5321 §4.1.2)
    // sub-domain = Let-dig [Ldh-str]
    // Labels of 1–63 octets, the whole name at most 253 (RFC 1035 §2.3.4). A single label
    // (`localhost`) is allowed; a trailing dot is not: the configuration writes names as
    // SMTP does.
    static func isValidDomain(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 253 else { return false }
        return name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy(isValidLabel)
    }

    static func isValidLabel(_ label: Substring) -> Bool {
        guard (1...63).contains(label.utf8.count), let first = label.first, let last = label.last,
            first != "-", last != "-"
        else { return false }
        return label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
    }

    // selector = sub-domain *( "." sub-domain )     (RFC 6376 §3.1); `_` is common in
    // practice and harmless in a TXT owner name.
    static func isValidSelector(_ selector: String) -> Bool {
        guard !selector.isEmpty else { return false }
        return selector.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            label.utf8.count <= 63 && !label.isEmpty
                && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }
        }
    }

    // Dot-string = Atom *("."  Atom)                      (RFC 5321 §4.1.2)
    // atext      = ALPHA / DIGIT / "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "/"
    //              / "=" / "?" / "^" / "_" / "`" / "{" / "|" / "}" / "~"  (RFC 5322 §3.2.3)
    //              / UTF8-non-ascii                        (RFC 6531 §3.3)
    // A mailbox is a Maildir folder, and RecipientPolicy never resolves a local part with "%"
    // or "!" (relay tricks), so those and "/" are refused here.
    static func isValidLocalPart(_ localPart: String) -> Bool {
        guard !localPart.isEmpty, localPart.utf8.count <= 64 else { return false }
        return localPart.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { atom in
            !atom.isEmpty && atom.unicodeScalars.allSatisfy(isMailboxText)
        }
    }

    private static func isMailboxText(_ scalar: Unicode.Scalar) -> Bool {
        if scalar.value >= 0x80 { return true }
        if ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar) {
            return true
        }
        return "#$&'*+-=?^_`{|}~".unicodeScalars.contains(scalar)
    }

    // Mailbox = Local-part "@" Domain; the local part as a Dot-string (quoted strings are not
    // worth their trouble in a configuration file).
    static func isValidAddress(_ address: String) -> Bool {
        guard let at = address.lastIndex(of: "@") else { return false }
        let localPart = String(address[..<at])
        let domain = String(address[address.index(after: at)...])
        return isValidLocalPart(localPart) && (isValidDomain(domain) || isAddressLiteral(domain))
    }

    private static func isAddressLiteral(_ domain: String) -> Bool {
        domain.hasPrefix("[") && domain.hasSuffix("]") && domain.count > 2
    }
}

/// Relative paths in the file are relative to the file's folder (SPEC §1.2).
enum ConfigurationPath {
    /// `path` itself when absolute, else `base/path`, with `.` segments and doubled slashes
    /// removed (`..` is kept: it means something different behind a symbolic link).
    static func resolve(_ path: String, against base: String) -> String {
        let joined = path.hasPrefix("/") ? path : base + "/" + path
        let segments = joined.split(separator: "/").filter { $0 != "." }
        return (joined.hasPrefix("/") ? "/" : "") + segments.joined(separator: "/")
    }
}
