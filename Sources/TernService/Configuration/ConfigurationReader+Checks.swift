import MailPolicy
import SMTPProtocol
import TOMLKit

/// `[checks]`, `[[dkim]]` and `[[rules]]`: anti-spam and sender authentication (SPEC §2.6).
extension ConfigurationReader {
    mutating func readChecks(_ table: TOMLTable) -> TernConfiguration.Checks {
        var checks = TernConfiguration.Checks()
        checkKeys(
            table, path: "checks",
            allowed: [
                "dnsbl", "dnswl", "reject_score", "spf", "dkim_verify", "dmarc", "greylisting", "spamd", "rspamd",
                "milter", "filter_max_size", "filter_timeout", "filter_failure", "greet_pause", "helo",
            ])
        for (list, path) in tables(table, "checks", "dnsbl") {
            if let zone = readDNSList(list, path) { checks.dnsbl.append(zone) }
        }
        for (list, path) in tables(table, "checks", "dnswl") {
            if let zone = readDNSList(list, path) { checks.dnswl.append(zone) }
        }
        if let score = integer(table, "checks", "reject_score") { checks.rejectScore = score }
        if let mode = choice(table, "checks", "spf", SPFMode.self) { checks.spf = mode }
        if let value = bool(table, "checks", "dkim_verify") { checks.dkimVerify = value }
        if let mode = choice(table, "checks", "dmarc", DMARCMode.self) { checks.dmarc = mode }
        if let text = string(table, "checks", "greylisting"), !text.isEmpty {
            checks.greylisting = positiveDuration(text, key: "checks.greylisting")
        }
        if let text = string(table, "checks", "spamd"), !text.isEmpty {
            checks.spamd = serviceAddress(text, key: "checks.spamd", defaultPort: 783)
        }
        if let text = string(table, "checks", "rspamd"), !text.isEmpty {
            if text.hasPrefix("http://"), Self.isHTTPURL(text) {
                checks.rspamd = text
            } else {
                problem("checks.rspamd", "\"\(text)\" is not an http:// URL")
            }
        }
        if let text = string(table, "checks", "milter"), !text.isEmpty {
            // Postfix's forms too: inet:host:port, unix:/path.
            if let endpoint = FilterEndpoint(text), !text.hasPrefix("http") {
                checks.milter = endpoint
            } else {
                problem(
                    "checks.milter",
                    "\"\(text)\" is not a milter address such as \"127.0.0.1:8891\", \"inet:127.0.0.1:8891\" or \"unix:/run/milter.sock\""
                )
            }
        }
        if let size = integer(table, "checks", "filter_max_size") {
            if size > 0 {
                checks.filterMaxSize = size
            } else {
                problem("checks.filter_max_size", "must be greater than 0")
            }
        }
        if let text = string(table, "checks", "filter_timeout"),
            let timeout = positiveDuration(text, key: "checks.filter_timeout")
        {
            checks.filterTimeout = timeout
        }
        if let action = choice(table, "checks", "filter_failure", FilterFailureAction.self) {
            checks.filterFailure = action
        }
        if let text = string(table, "checks", "greet_pause"), !text.isEmpty {
            if let pause = positiveDuration(text, key: "checks.greet_pause") {
                if pause > .seconds(30) {
                    problem("checks.greet_pause", "\"\(text)\" is too long: clients give up on a silent server")
                } else {
                    checks.greetPause = pause
                }
            }
        }
        if let mode = choice(table, "checks", "helo", HELOMode.self) { checks.helo = mode }
        return checks
    }

    /// A string naming one case of `Choice`; a problem lists the valid ones.
    mutating func choice<Choice: RawRepresentable & CaseIterable>(
        _ table: TOMLTable, _ path: String, _ key: String, _: Choice.Type
    ) -> Choice? where Choice.RawValue == String {
        guard let text = string(table, path, key) else { return nil }
        if let value = Choice(rawValue: text) { return value }
        let names = Choice.allCases.map { "\"\($0.rawValue)\"" }
        let expected = names.count > 1 ? names.dropLast().joined(separator: ", ") + " or " + names.last! : names[0]
        problem(Self.join(path, key), "\"\(text)\": expected \(expected)")
        return nil
    }

    static func isHTTPURL(_ text: String) -> Bool {
        for scheme in ["http://", "https://"] where text.hasPrefix(scheme) {
            let authority = text.dropFirst(scheme.count).prefix { $0 != "/" }
            return ServiceAddress(String(authority), defaultPort: 80) != nil
        }
        return false
    }

    mutating func readDNSList(_ table: TOMLTable, _ path: String) -> DNSListZone? {
        checkKeys(table, path: path, allowed: ["zone", "weight"])
        let zone = string(table, path, "zone")
        let weight = integer(table, path, "weight")
        if table["zone"] == nil { problem("\(path).zone", "missing") }
        if table["weight"] == nil { problem("\(path).weight", "missing") }
        guard let zone, let weight else { return nil }
        guard DomainSyntax.isValidDomain(zone) else {
            problem("\(path).zone", "\"\(zone)\" is not a valid domain name")
            return nil
        }
        return DNSListZone(zone: zone.lowercased(), weight: weight)
    }

    mutating func readDKIM(_ table: TOMLTable, _ path: String) -> DKIMSigningKey? {
        checkKeys(table, path: path, allowed: ["domain", "selector", "private_key"])
        let domain = string(table, path, "domain")
        let selector = string(table, path, "selector")
        let privateKey = self.path(table, path, "private_key")
        for key in ["domain", "selector", "private_key"] where table[key] == nil {
            problem("\(path).\(key)", "missing")
        }
        if let domain, !DomainSyntax.isValidDomain(domain) {
            problem("\(path).domain", "\"\(domain)\" is not a valid domain name")
            return nil
        }
        if let selector, !DomainSyntax.isValidSelector(selector) {
            problem("\(path).selector", "\"\(selector)\" is not a valid selector (RFC 6376 §3.1)")
            return nil
        }
        guard let domain, let selector, let privateKey else { return nil }
        if readKeyFiles {
            do {
                _ = try DKIMKey(contentsOfFile: privateKey)
            } catch {
                problem("\(path).private_key", "cannot sign with \(privateKey): \(error)")
                return nil
            }
        }
        return DKIMSigningKey(domain: domain.lowercased(), selector: selector, privateKey: privateKey)
    }

    /// `"100/1h"`: a count and a window.
    mutating func rateLimit(_ table: TOMLTable, _ path: String, _ key: String) -> RateLimit? {
        guard let text = string(table, path, key), !text.isEmpty else { return nil }
        let fullKey = Self.join(path, key)
        let parts = text.split(separator: "/", maxSplits: 1)
        guard parts.count == 2, let count = Int(parts[0]), count > 0,
            let window = Duration(configurationText: String(parts[1])), window > .zero
        else {
            problem(fullKey, "\"\(text)\" is not a rate such as \"100/1h\" (a count over a duration)")
            return nil
        }
        return RateLimit(count: count, window: window)
    }

    // MARK: Rules

    mutating func readRules(_ document: TOMLTable) -> [Rule] {
        var rules: [Rule] = []
        var names: [String: String] = [:]
        for (table, path) in tables(document, "", "rules") {
            guard let rule = readRule(table, path) else { continue }
            if let first = names[rule.name.lowercased()] {
                problem("\(path).name", "\"\(rule.name)\" is already the name of \(first)")
                continue
            }
            names[rule.name.lowercased()] = path
            rules.append(rule)
        }
        return rules
    }

    mutating func readRule(_ table: TOMLTable, _ path: String) -> Rule? {
        checkKeys(
            table, path: path,
            allowed: ["name", "if", "action", "reply", "header", "subject_prefix", "redirect", "score"])
        let name = string(table, path, "name")
        if table["name"] == nil { problem("\(path).name", "missing") }
        if name?.isEmpty == true { problem("\(path).name", "must not be empty") }
        var conditions: [RuleCondition] = []
        if let value = table["if"] {
            if let conditionTable = value.table {
                conditions = readConditions(conditionTable, "\(path).if")
                if conditions.isEmpty, conditionTable.isEmpty {
                    problem("\(path).if", "names no condition; leave `if` out for a rule that always applies")
                }
            } else {
                problem("\(path).if", "expected a table of conditions, such as { spf = \"fail\" }")
            }
        }
        guard let action = readAction(table, path), let name, !name.isEmpty else { return nil }
        return Rule(name: name, conditions: conditions, action: action)
    }

    mutating func readAction(_ table: TOMLTable, _ path: String) -> RuleAction? {
        guard let verb = string(table, path, "action") else {
            if table["action"] == nil {
                problem(
                    "\(path).action",
                    "missing: accept, reject, defer, tag, score, quarantine, redirect or discard")
            }
            return nil
        }
        let extras: [String: Set<String>] = [
            "reject": ["reply"], "defer": ["reply"], "tag": ["header", "subject_prefix"], "redirect": ["redirect"],
            "score": ["score"],
        ]
        for key in ["reply", "header", "subject_prefix", "redirect", "score"]
        where table[key] != nil && extras[verb]?.contains(key) != true {
            problem("\(path).\(key)", "does not go with action \"\(verb)\"")
        }
        switch verb {
        case "accept": return .accept
        case "quarantine": return .quarantine
        case "discard": return .discard
        case "reject", "defer":
            let permanent = verb == "reject"
            let fallback =
                permanent
                ? SMTPReply(550, EnhancedStatusCode(5, 7, 1), "Message refused by policy")
                : SMTPReply(451, EnhancedStatusCode(4, 7, 1), "Message deferred by policy; try again later")
            guard let text = string(table, path, "reply") else {
                return permanent ? .reject(fallback) : .defer(fallback)
            }
            guard let reply = Self.policyReply(text, permanent: permanent) else {
                problem(
                    "\(path).reply",
                    "\"\(text)\" is not a \(permanent ? "5xx" : "4xx") reply such as \"\(permanent ? "550 5.7.1" : "451 4.7.1") text\""
                )
                return nil
            }
            return permanent ? .reject(reply) : .defer(reply)
        case "tag":
            let header = string(table, path, "header")
            let prefix = string(table, path, "subject_prefix")
            if let header, !Self.isHeaderField(header) {
                problem("\(path).header", "\"\(header)\" is not a header field such as \"X-Spam: yes\"")
                return nil
            }
            if let prefix, prefix.contains(where: { $0 == "\r" || $0 == "\n" }) {
                problem("\(path).subject_prefix", "must be one line")
                return nil
            }
            guard header != nil || prefix != nil else {
                problem("\(path).action", "\"tag\" needs header, subject_prefix or both")
                return nil
            }
            return .tag(header: header, subjectPrefix: prefix)
        case "redirect":
            guard let target = string(table, path, "redirect") else {
                problem("\(path).redirect", "missing: the address that gets the message instead")
                return nil
            }
            guard (try? Mailbox.parse(target)) != nil else {
                problem("\(path).redirect", "\"\(target)\" is not a mail address")
                return nil
            }
            return .redirect(target)
        case "score":
            guard let value = table["score"] else {
                problem("\(path).score", "missing: the points the rule adds (negative to subtract)")
                return nil
            }
            guard let points = value.double ?? value.int.map(Double.init), points.isFinite else {
                problem("\(path).score", "expected a number")
                return nil
            }
            return .addScore(points)
        default:
            problem(
                "\(path).action",
                "\"\(verb)\": expected accept, reject, defer, tag, score, quarantine, redirect or discard")
            return nil
        }
    }

    /// `550 5.7.1 text`, `451 text`: the code's class must match the action, and an enhanced
    /// code, when given, the code's class (RFC 3463 §2).
    static func policyReply(_ text: String, permanent: Bool) -> SMTPReply? {
        let words = text.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
        guard let first = words.first, first.count == 3, let code = Int(first),
            permanent ? (500...599).contains(code) : (400...499).contains(code),
            !text.contains(where: { $0 == "\r" || $0 == "\n" })
        else { return nil }
        var rest = words.dropFirst()
        var enhanced: EnhancedStatusCode?
        if let candidate = rest.first {
            let parts = candidate.split(separator: ".", omittingEmptySubsequences: false).map { Int($0) }
            if parts.count == 3, let a = parts[0], let b = parts[1], let c = parts[2] {
                guard a == code / 100, (0...999).contains(b), (0...999).contains(c) else { return nil }
                enhanced = EnhancedStatusCode(a, b, c)
                rest = rest.dropFirst()
            }
        }
        let message = rest.joined(separator: " ")
        return SMTPReply(code, enhanced, message.isEmpty ? (permanent ? "Refused" : "Try again later") : message)
    }

    /// `Name: value` with a field name of printable ASCII but colon (RFC 5322 §2.2) on one line.
    static func isHeaderField(_ text: String) -> Bool {
        guard let colon = text.firstIndex(of: ":"), colon != text.startIndex else { return false }
        let name = text[..<colon]
        return name.unicodeScalars.allSatisfy { (33...126).contains($0.value) && $0 != ":" }
            && !text.contains(where: { $0 == "\r" || $0 == "\n" })
    }

    mutating func readConditions(_ table: TOMLTable, _ path: String) -> [RuleCondition] {
        checkKeys(
            table, path: path,
            allowed: [
                "client", "client_name", "helo", "helo_finding", "authenticated", "sender", "recipient", "header",
                "spf", "dkim", "dmarc", "dnsbl", "score", "spam",
            ])
        var conditions: [RuleCondition] = []
        if table["client"] != nil {
            var ranges: [NetworkRange] = []
            for (index, text) in strings(table, path, "client").enumerated() {
                do {
                    ranges.append(try NetworkRange(text))
                } catch {
                    problem("\(path).client[\(index)]", error.description)
                }
            }
            conditions.append(.client(ranges))
        }
        if table["client_name"] != nil { conditions.append(.clientName(patterns(table, path, "client_name"))) }
        if table["helo"] != nil { conditions.append(.helo(patterns(table, path, "helo"))) }
        if table["helo_finding"] != nil {
            conditions.append(.heloFinding(names(table, path, "helo_finding", allowed: Self.heloFindings)))
        }
        if let wanted = bool(table, path, "authenticated") { conditions.append(.authenticated(wanted)) }
        if table["sender"] != nil { conditions.append(.sender(patterns(table, path, "sender"))) }
        if table["recipient"] != nil { conditions.append(.recipient(patterns(table, path, "recipient"))) }
        if let value = table["header"] {
            if let fields = value.table {
                for key in fields.keys.sorted() {
                    guard Self.isHeaderField("\(key):") else {
                        problem("\(path).header.\(key)", "\"\(key)\" is not a header field name")
                        continue
                    }
                    conditions.append(
                        .header(name: key.lowercased(), patterns: patterns(fields, "\(path).header", key)))
                }
            } else {
                problem("\(path).header", "expected a table such as { Subject = \"*lottery*\" }")
            }
        }
        if table["spf"] != nil {
            conditions.append(
                .spf(
                    names(
                        table, path, "spf",
                        allowed: ["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"])))
        }
        if table["dkim"] != nil {
            conditions.append(
                .dkim(names(table, path, "dkim", allowed: ["pass", "fail", "none", "temperror", "permerror"])))
        }
        if table["dmarc"] != nil {
            conditions.append(
                .dmarc(names(table, path, "dmarc", allowed: ["pass", "fail", "none", "temperror", "permerror"])))
        }
        if table["dnsbl"] != nil {
            conditions.append(.listedIn(Set(strings(table, path, "dnsbl").map { $0.lowercased() })))
        }
        if let value = table["score"] {
            if let number = value.double ?? value.int.map(Double.init) {
                conditions.append(.score(ScoreComparison(.atLeast, number)))
            } else if let text = value.string, let comparison = ScoreComparison(text) {
                conditions.append(.score(comparison))
            } else {
                problem("\(path).score", "expected a number or a comparison such as \">= 5\"")
            }
        }
        if let wanted = bool(table, path, "spam") { conditions.append(.spam(wanted)) }
        return conditions
    }

    static let heloFindings = Set(HELOFinding.allCases.map(\.rawValue))

    /// A string or an array of strings.
    mutating func strings(_ table: TOMLTable, _ path: String, _ key: String) -> [String] {
        if let text = table[key]?.string { return [text] }
        let list = stringArray(table, path, key)
        if list.isEmpty, table[key]?.array != nil { problem(Self.join(path, key), "must not be empty") }
        return list
    }

    mutating func patterns(_ table: TOMLTable, _ path: String, _ key: String) -> [WildcardPattern] {
        strings(table, path, key).map(WildcardPattern.init)
    }

    mutating func names(_ table: TOMLTable, _ path: String, _ key: String, allowed: Set<String>) -> Set<String> {
        var result: Set<String> = []
        for text in strings(table, path, key) {
            if allowed.contains(text.lowercased()) {
                result.insert(text.lowercased())
            } else {
                problem(
                    Self.join(path, key), "\"\(text)\": expected one of \(allowed.sorted().joined(separator: ", "))")
            }
        }
        return result
    }
}
