extension SPFVerdict {
    /// The `Received-SPF:` header field of RFC 7208 §9.1 for this verdict, ending in CRLF and
    /// folded before 78 columns where the words allow:
    ///
    ///     Received-SPF: pass (mybox.example.org: domain of myname@example.com designates
    ///     	192.0.2.1 as permitted sender) client-ip=192.0.2.1;
    ///     	envelope-from="myname@example.com"; helo=foo.example.com;
    ///     	receiver=mybox.example.org; identity=mailfrom; mechanism="ip4:192.0.2.0/24";
    ///
    ///     header-field = "Received-SPF:" [CFWS] result FWS [comment FWS] [ key-value-list ] CRLF
    ///     key-value-pair = key [CFWS] "=" ( dot-atom / quoted-string )
    ///
    /// Values that are not dot-atoms are quoted; text from the client or the DNS cannot end the
    /// field or break its comment.
    public func receivedSPFField() -> String {
        let comment = "(" + Self.commentEscaped("\(receiver.isEmpty ? "unknown" : receiver): \(commentText)") + ")"
        var words = [result.rawValue] + comment.split(separator: " ").map(String.init)
        var pairs: [(String, String)] = [("client-ip", client)]
        if identity == .mailfrom || !sender.isEmpty { pairs.append(("envelope-from", sender)) }
        pairs.append(("helo", helo))
        if !receiver.isEmpty { pairs.append(("receiver", receiver)) }
        pairs.append(("identity", identity.rawValue))
        if let mechanism { pairs.append(("mechanism", mechanism)) }
        if let problem { pairs.append(("problem", problem)) }
        words += pairs.map { "\($0)=\(Self.dotAtomOrQuoted($1));" }
        return Self.folded("Received-SPF:", words)
    }

    /// The usual words of §9.1's example and of common implementations, one per result.
    private var commentText: String {
        let who = identity == .helo ? "\(helo)" : (sender.isEmpty ? "postmaster@\(helo)" : sender)
        return switch result {
        case .pass: "domain of \(who) designates \(client) as permitted sender"
        case .fail: "domain of \(who) does not designate \(client) as permitted sender"
        case .softfail: "domain of transitioning \(who) does not designate \(client) as permitted sender"
        case .neutral: "\(client) is neither permitted nor denied by domain of \(who)"
        case .none: "domain of \(who) does not designate permitted sender hosts"
        case .temperror: "error in processing during lookup of domain of \(who)"
        case .permerror: "permanent error in processing domain of \(who)"
        }
    }

    // dot-atom-text = 1*atext *("." 1*atext)   (RFC 5322 §3.2.3)
    static func isDotAtom(_ text: String) -> Bool {
        !text.isEmpty
            && text.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { atom in
                !atom.isEmpty && atom.unicodeScalars.allSatisfy(isAtext)
            }
    }

    // atext = ALPHA / DIGIT / "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "/" / "=" /
    //         "?" / "^" / "_" / "`" / "{" / "|" / "}" / "~"
    static func isAtext(_ scalar: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar)
            || "!#$%&'*+-/=?^_`{|}~".unicodeScalars.contains(scalar)
    }

    /// `text` as a dot-atom when it is one, else as a quoted-string (RFC 5322 §3.2.4) with
    /// `"` and `\` escaped and controls replaced by `?`.
    static func dotAtomOrQuoted(_ text: String) -> String {
        if isDotAtom(text) { return text }
        var quoted = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"", "\\": quoted += "\\" + String(scalar)
            case _ where scalar.value < 0x20 || scalar.value == 0x7F: quoted += "?"
            default: quoted.unicodeScalars.append(scalar)
            }
        }
        return quoted + "\""
    }

    /// Comment text (RFC 5322 §3.2.2): parentheses and backslashes as quoted-pairs, controls
    /// (CR and LF among them) as `?`.
    static func commentEscaped(_ text: String) -> String {
        var result = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "(", ")", "\\": result += "\\" + String(scalar)
            case _ where scalar.value < 0x20 || scalar.value == 0x7F: result += "?"
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    /// `name` and the words on lines of at most 78 octets where the words allow (RFC 5322
    /// §2.1.1), continuation lines starting with a tab (§2.2.3), each line ending in CRLF.
    static func folded(_ name: String, _ words: [String]) -> String {
        var lines: [String] = []
        var line = name
        for word in words {
            if line.utf8.count + 1 + word.utf8.count > 78 && line != name {
                lines.append(line)
                line = "\t" + word
            } else {
                line += " " + word
            }
        }
        lines.append(line)
        return lines.map { $0 + "\r\n" }.joined()
    }
}
