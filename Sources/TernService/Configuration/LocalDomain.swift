/// One `[[domains]]` entry: a domain Tern is final destination for, its mailboxes and aliases.
/// Names are kept in lower case: local parts match case-insensitively (SPEC §1.3).
public struct LocalDomain: Sendable, Hashable {
    /// The domain, lower case, no trailing dot.
    public var name: String
    /// Local parts that have a mailbox, lower case, in file order.
    public var mailboxes: [String]
    /// Local part (lower case) → targets as written: a local part of this domain (lower case)
    /// or a full address `user@domain`.
    public var aliases: [String: [String]]

    public init(name: String, mailboxes: [String] = [], aliases: [String: [String]] = [:]) {
        self.name = name.lowercased()
        self.mailboxes = mailboxes.map { $0.lowercased() }
        self.aliases = Dictionary(
            aliases.map { ($0.key.lowercased(), $0.value.map(Self.normalizedTarget)) },
            uniquingKeysWith: { first, _ in first })
    }

    /// Whether `localPart` has a mailbox here (case-insensitive). `+detail` is not stripped:
    /// `RecipientPolicy` does that.
    public func hasMailbox(_ localPart: String) -> Bool {
        mailboxes.contains(localPart.lowercased())
    }

    /// The targets `localPart` is an alias for (case-insensitive); nil when it is no alias.
    public func aliasTargets(of localPart: String) -> [String]? {
        aliases[localPart.lowercased()]
    }

    /// The final recipients of `localPart` within this domain: aliases expanded recursively,
    /// mailboxes of this domain as `user@domain`, every other address as written (a full
    /// address in another local domain is not expanded here; `TernConfiguration.resolve`
    /// does that). nil when `localPart` is neither a mailbox nor an alias.
    public func resolve(localPart: String) -> [String]? {
        AliasExpansion(domains: [self]).resolve(localPart: localPart, domain: name).targets
    }

    /// A bare local part names a local part of the alias's own domain: lower-case it. A full
    /// address keeps its local part as written and gets a lower-case domain.
    static func normalizedTarget(_ target: String) -> String {
        guard let at = target.lastIndex(of: "@") else { return target.lowercased() }
        return String(target[..<at]) + "@" + target[target.index(after: at)...].lowercased()
    }
}

extension TernConfiguration {
    /// The final recipients of `localPart@domain` across all local domains: aliases expanded
    /// recursively (an alias takes precedence over a mailbox of the same name, and may name
    /// itself to keep a copy in that mailbox), local mailboxes as `user@domain` in lower case,
    /// external addresses as written, duplicates removed. nil when the domain is not local
    /// or the local part is neither a mailbox nor an alias. `+detail` is not stripped here.
    public func resolve(localPart: String, domain: String) -> [String]? {
        AliasExpansion(domains: domains).resolve(localPart: localPart, domain: domain).targets
    }
}

/// Recursive alias expansion with loop detection and a depth limit. Loops and over-deep chains
/// are configuration problems, found when the file is loaded (`problems`); at run time the
/// offending branch is dropped rather than followed forever.
struct AliasExpansion {
    /// How many aliases deep an expansion may go (sendmail's MAXRCRSN is 10).
    static let maximumDepth = 10

    struct Result {
        /// nil: not a local recipient.
        var targets: [String]?
        /// Loops and over-deep chains met on the way, in words.
        var problems: [String] = []
    }

    let domains: [String: LocalDomain]

    init(domains: [LocalDomain]) {
        var byName: [String: LocalDomain] = [:]
        for domain in domains where byName[domain.name] == nil { byName[domain.name] = domain }
        self.domains = byName
    }

    func resolve(localPart: String, domain: String) -> Result {
        var name = domain.lowercased()
        if name.hasSuffix(".") { name.removeLast() }
        guard let local = domains[name] else { return Result(targets: nil) }
        let start = "\(localPart.lowercased())@\(name)"
        guard local.aliasTargets(of: localPart) != nil || local.hasMailbox(localPart) else {
            return Result(targets: nil)
        }
        var result = Result(targets: [])
        var seen: Set<String> = []
        expand(start, path: [], into: &result, seen: &seen)
        return result
    }

    /// The local (domain, local part) an address names, or nil when it is not local.
    private func local(_ address: String) -> (LocalDomain, String)? {
        guard let at = address.lastIndex(of: "@") else { return nil }
        let domainName = address[address.index(after: at)...].lowercased()
        guard let domain = domains[domainName] else { return nil }
        return (domain, address[..<at].lowercased())
    }

    private func expand(_ address: String, path: [String], into result: inout Result, seen: inout Set<String>) {
        func add(_ target: String) {
            if seen.insert(target).inserted { result.targets?.append(target) }
        }
        guard let (domain, localPart) = local(address) else {
            add(address)
            return
        }
        let key = "\(localPart)@\(domain.name)"
        guard let targets = domain.aliasTargets(of: localPart) else {
            // A mailbox, or a local part the file does not know (a passwd-file user, say):
            // final either way; delivery decides.
            add(key)
            return
        }
        guard path.count < Self.maximumDepth else {
            result.problems.append(
                "alias expansion deeper than \(Self.maximumDepth): \((path + [key]).joined(separator: " → "))")
            return
        }
        for target in targets {
            let full = target.contains("@") ? target : "\(target)@\(domain.name)"
            guard let (targetDomain, targetLocal) = self.local(full) else {
                add(full)
                continue
            }
            let targetKey = "\(targetLocal)@\(targetDomain.name)"
            if targetKey == key || path.contains(targetKey) {
                // Naming an alias on the current path delivers to its mailbox when it has one
                // (`alice = ["alice", "bob"]` keeps a copy); without a mailbox it is a loop.
                if targetDomain.hasMailbox(targetLocal) {
                    add(targetKey)
                } else {
                    result.problems.append("alias loop: \((path + [key, targetKey]).joined(separator: " → "))")
                }
                continue
            }
            expand(targetKey, path: path + [key], into: &result, seen: &seen)
        }
    }
}
