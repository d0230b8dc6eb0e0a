import MailPolicy
import TOMLKit

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

extension TernConfiguration {
    /// Reads and checks a configuration file; relative paths in it are relative to its folder.
    public static func load(contentsOf path: String) throws(ConfigurationError) -> TernConfiguration {
        let absolute = ConfigurationPath.resolve(path, against: currentDirectory())
        let text: String
        switch readFile(absolute) {
        case .success(let contents): text = contents
        case .failure(let error):
            throw ConfigurationError(problems: [ConfigurationProblem(key: "", line: nil, message: error.message)])
        }
        let folder = absolute.split(separator: "/").dropLast().joined(separator: "/")
        return try parse(text, baseDirectory: "/" + folder, readKeyFiles: true)
    }

    /// Parses and checks configuration text; relative paths resolve against `baseDirectory`.
    /// Throws every problem found, each with its key and line, in line order. With
    /// `readKeyFiles`, the `[[dkim]]` keys are loaded too, so that a bad key is a configuration
    /// problem rather than a start-up failure.
    public static func parse(
        _ text: String, baseDirectory: String, readKeyFiles: Bool = false
    ) throws(ConfigurationError) -> TernConfiguration {
        let document: TOMLTable
        do {
            document = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigurationError(problems: [
                ConfigurationProblem(key: "", line: error.source.begin.line, message: error.description)
            ])
        } catch {
            throw ConfigurationError(problems: [ConfigurationProblem(key: "", line: nil, message: "\(error)")])
        }
        var reader = ConfigurationReader(lines: KeyLineIndex(source: text), baseDirectory: baseDirectory)
        reader.readKeyFiles = readKeyFiles
        let configuration = reader.read(document)
        guard reader.problems.isEmpty else {
            // Stable: problems on one line keep the order they were found in.
            let ordered = reader.problems.enumerated().sorted {
                ($0.element.line ?? .max, $0.offset) < ($1.element.line ?? .max, $1.offset)
            }
            throw ConfigurationError(problems: ordered.map(\.element))
        }
        return configuration
    }

    private static func currentDirectory() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        guard getcwd(&buffer, buffer.count) != nil else { return "/" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func readFile(_ path: String) -> Result<String, ConfigurationValueError> {
        guard let file = fopen(path, "rb") else {
            return .failure(.init("cannot read \(path): \(String(cString: strerror(errno)))"))
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            bytes += chunk[0..<count]
            if count < chunk.count {
                guard ferror(file) == 0 else {
                    return .failure(.init("cannot read \(path): \(String(cString: strerror(errno)))"))
                }
                break
            }
            guard bytes.count <= 16 << 20 else { return .failure(.init("\(path) is larger than 16 MiB")) }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            return .failure(.init("\(path) is not UTF-8 text"))
        }
        return .success(text)
    }
}

/// Turns a parsed TOML document into a `TernConfiguration`, collecting every problem: unknown
/// keys, wrong types, malformed values and contradictions. Each key is read by the one
/// function that knows it, so the list of keys here is the list in `docs/configuration.md`.
struct ConfigurationReader {
    let lines: KeyLineIndex
    let baseDirectory: String
    private(set) var problems: [ConfigurationProblem] = []
    /// Load `[[dkim]]` private keys and report those that cannot sign.
    var readKeyFiles = false

    init(lines: KeyLineIndex, baseDirectory: String) {
        self.lines = lines
        self.baseDirectory = baseDirectory
    }

    mutating func problem(_ key: String, _ message: String) {
        problems.append(ConfigurationProblem(key: key, line: lines.line(for: key), message: message))
    }

    mutating func read(_ document: TOMLTable) -> TernConfiguration {
        checkKeys(
            document, path: "",
            allowed: [
                "hostname", "data_dir", "listen", "limits", "relay", "tls", "auth", "domains", "delivery", "dns",
                "checks", "dkim", "rules", "tls_policy", "mta_sts", "dane", "tls_rpt",
            ])
        var hostname: String?
        if let value = string(document, "", "hostname") {
            if DomainSyntax.isValidDomain(value) {
                hostname = value
            } else {
                problem("hostname", "\"\(value)\" is not a valid domain name")
            }
        }
        var dataDirectory = ConfigurationPath.resolve("tern-data", against: baseDirectory)
        if let value = path(document, "", "data_dir") { dataDirectory = value }

        var configuration = TernConfiguration(
            hostname: hostname ?? MachineHostName.current(), dataDirectory: dataDirectory)
        if let table = section(document, "listen") { configuration.listen = readListen(table) }
        if let table = section(document, "limits") { configuration.limits = readLimits(table) }
        if let table = section(document, "relay") { configuration.relay = readRelay(table) }
        if let table = section(document, "tls") { configuration.tls = readTLS(table) }
        if let table = section(document, "auth") { configuration.auth = readAuth(table) }
        if let table = section(document, "delivery") { configuration.delivery = readDelivery(table) }
        configuration.outboundTLS = readOutboundTLS(document, delivery: document["delivery"]?.table)
        if let table = section(document, "dns") { configuration.dns = readDNS(table) }
        if let table = section(document, "checks") { configuration.checks = readChecks(table) }
        configuration.domains = readDomains(document, passwdFile: configuration.auth.passwdFile != nil)
        for (table, path) in tables(document, "", "dkim") {
            if let key = readDKIM(table, path) { configuration.dkim.append(key) }
        }
        configuration.rules = readRules(document)
        checkListenersDistinct(configuration.listen)
        if configuration.tls == nil, !configuration.listen.submissions.isEmpty {
            problem("listen.submissions", "needs [tls]: implicit TLS (RFC 8314) has no plaintext start")
        }
        return configuration
    }

    // MARK: - Sections

    mutating func readListen(_ table: TOMLTable) -> TernConfiguration.Listen {
        var listen = TernConfiguration.Listen()
        checkKeys(table, path: "listen", allowed: ["smtp", "submission", "submissions", "admin"])
        listen.smtp = addresses(table, "listen", "smtp")
        listen.submission = addresses(table, "listen", "submission")
        listen.submissions = addresses(table, "listen", "submissions")
        if let text = string(table, "listen", "admin"), !text.isEmpty {
            listen.admin = serviceAddress(text, key: "listen.admin", defaultPort: nil)
        }
        return listen
    }

    mutating func checkListenersDistinct(_ listen: TernConfiguration.Listen) {
        var seen: [ServiceAddress: String] = [:]
        let all =
            listen.smtp.enumerated().map { ($1, "listen.smtp[\($0)]") }
            + listen.submission.enumerated().map { ($1, "listen.submission[\($0)]") }
            + listen.submissions.enumerated().map { ($1, "listen.submissions[\($0)]") }
            + (listen.admin.map { [($0, "listen.admin")] } ?? [])
        for (address, key) in all {
            if let first = seen[address] {
                problem(key, "\(address) is already used by \(first)")
            } else {
                seen[address] = key
            }
        }
    }

    mutating func readLimits(_ table: TOMLTable) -> TernConfiguration.Limits {
        var limits = TernConfiguration.Limits()
        func positive(_ key: String, _ value: inout Int) {
            if let number = integer(table, "limits", key) {
                if number > 0 { value = number } else { problem("limits.\(key)", "must be greater than 0") }
            }
        }
        func positive(_ key: String, _ value: inout Duration) {
            if let duration = duration(table, "limits", key) {
                if duration > .zero { value = duration } else { problem("limits.\(key)", "must be longer than 0s") }
            }
        }
        positive("max_message_size", &limits.maxMessageSize)
        positive("max_recipients", &limits.maxRecipients)
        positive("max_connections", &limits.maxConnections)
        positive("max_connections_per_ip", &limits.maxConnectionsPerIP)
        positive("command_timeout", &limits.commandTimeout)
        positive("data_timeout", &limits.dataTimeout)
        positive("max_header_size", &limits.maxHeaderSize)
        positive("max_received_headers", &limits.maxReceivedHeaders)
        positive("max_errors", &limits.maxErrors)
        positive("min_data_rate_grace", &limits.minDataRateGrace)
        limits.connectionRate = rateLimit(table, "limits", "connection_rate")
        limits.messageRate = rateLimit(table, "limits", "message_rate")
        limits.recipientRate = rateLimit(table, "limits", "recipient_rate")
        if let rate = integer(table, "limits", "min_data_rate") {
            if rate >= 0 { limits.minDataRate = rate } else { problem("limits.min_data_rate", "must not be negative") }
        }
        checkKeys(
            table, path: "limits",
            allowed: [
                "max_message_size", "max_recipients", "max_connections", "max_connections_per_ip", "command_timeout",
                "data_timeout", "max_header_size", "max_received_headers", "max_errors", "min_data_rate",
                "min_data_rate_grace", "connection_rate", "message_rate", "recipient_rate",
            ])
        return limits
    }

    mutating func readRelay(_ table: TOMLTable) -> TernConfiguration.Relay {
        var relay = TernConfiguration.Relay()
        checkKeys(table, path: "relay", allowed: ["trusted_networks"])
        for (index, text) in stringArray(table, "relay", "trusted_networks").enumerated() {
            do {
                relay.trustedNetworks.append(try NetworkRange(text))
            } catch {
                problem("relay.trusted_networks[\(index)]", error.description)
            }
        }
        return relay
    }

    mutating func readTLS(_ table: TOMLTable) -> TernConfiguration.TLS? {
        checkKeys(table, path: "tls", allowed: ["certificate", "private_key"])
        let certificate = path(table, "tls", "certificate")
        let privateKey = path(table, "tls", "private_key")
        if table["certificate"] == nil {
            problem("tls.certificate", "missing ([tls] needs both certificate and private_key)")
        }
        if table["private_key"] == nil {
            problem("tls.private_key", "missing ([tls] needs both certificate and private_key)")
        }
        guard let certificate, let privateKey else { return nil }
        return TernConfiguration.TLS(certificate: certificate, privateKey: privateKey)
    }

    mutating func readAuth(_ table: TOMLTable) -> TernConfiguration.Auth {
        checkKeys(
            table, path: "auth",
            allowed: [
                "passwd_file", "max_failures_per_ip", "max_failures_per_user", "failure_window",
                "max_failures_per_session", "restrict_senders", "senders",
            ])
        var auth = TernConfiguration.Auth(passwdFile: path(table, "auth", "passwd_file"))
        for (key, keyPath) in [
            ("max_failures_per_ip", \TernConfiguration.Auth.maxFailuresPerIP),
            ("max_failures_per_user", \.maxFailuresPerUser), ("max_failures_per_session", \.maxFailuresPerSession),
        ] {
            guard let value = integer(table, "auth", key) else { continue }
            guard value >= 1 else {
                problem("auth.\(key)", "must be at least 1")
                continue
            }
            auth[keyPath: keyPath] = value
        }
        if let text = string(table, "auth", "failure_window"),
            let window = positiveDuration(text, key: "auth.failure_window")
        {
            auth.failureWindow = window
        }
        if let value = bool(table, "auth", "restrict_senders") { auth.restrictSenders = value }
        if let senders = section(table, "senders", path: "auth") {
            for (login, _) in senders {
                let addresses = stringArray(senders, "auth.senders", login)
                for (index, address) in addresses.enumerated() where !Self.isSenderGrant(address) {
                    problem(
                        "auth.senders.\(login)[\(index)]",
                        "\"\(address)\" is neither an address (user@domain) nor a whole domain (@domain)")
                }
                auth.senders[login.lowercased()] = addresses.map { $0.lowercased() }
            }
        }
        return auth
    }

    /// `user@domain` or `@domain`.
    static func isSenderGrant(_ text: String) -> Bool {
        guard let at = text.lastIndex(of: "@") else { return false }
        let domain = String(text[text.index(after: at)...])
        return DomainSyntax.isValidDomain(domain) && !text.contains(where: { $0 == " " || $0 == "<" || $0 == ">" })
    }

    mutating func readDelivery(_ table: TOMLTable) -> TernConfiguration.Delivery {
        var delivery = TernConfiguration.Delivery()
        checkKeys(
            table, path: "delivery",
            allowed: [
                "local", "remote_port", "relayhost", "retry", "max_queue_time", "delay_warning", "connect_timeout",
                "command_timeout", "data_timeout", "destination_concurrency", "concurrency", "starttls", "postmaster",
                "tls_ca_file",
            ])
        if let text = string(table, "delivery", "local"), let local = localDelivery(text) {
            delivery.local = local
        }
        if let port = integer(table, "delivery", "remote_port") {
            if (1...65535).contains(port) {
                delivery.remotePort = port
            } else {
                problem("delivery.remote_port", "must be a port number from 1 to 65535")
            }
        }
        if let text = string(table, "delivery", "relayhost"), !text.isEmpty {
            delivery.relayhost = relayhost(text)
        }
        if table["retry"] != nil {
            let texts = stringArray(table, "delivery", "retry")
            var retry: [Duration] = []
            for (index, text) in texts.enumerated() {
                if let value = positiveDuration(text, key: "delivery.retry[\(index)]") { retry.append(value) }
            }
            if table["retry"]?.array?.isEmpty == true {
                problem("delivery.retry", "must list at least one duration")
            } else if retry.count == texts.count && !retry.isEmpty {
                delivery.retry = retry
            }
        }
        if let value = duration(table, "delivery", "max_queue_time") {
            if value > .zero {
                delivery.maxQueueTime = value
            } else {
                problem("delivery.max_queue_time", "must be longer than 0s")
            }
        }
        if let text = string(table, "delivery", "delay_warning") {
            delivery.delayWarning = text.isEmpty ? nil : positiveDuration(text, key: "delivery.delay_warning")
        }
        for (key, path) in [
            ("connect_timeout", \TernConfiguration.Delivery.connectTimeout),
            ("command_timeout", \.commandTimeout), ("data_timeout", \.dataTimeout),
        ] {
            if let text = string(table, "delivery", key), let value = positiveDuration(text, key: "delivery.\(key)") {
                delivery[keyPath: path] = value
            }
        }
        for (key, path, maximum) in [
            ("destination_concurrency", \TernConfiguration.Delivery.destinationConcurrency, 1000),
            ("concurrency", \.concurrency, 10_000),
        ] {
            if let value = integer(table, "delivery", key) {
                if (1...maximum).contains(value) {
                    delivery[keyPath: path] = value
                } else {
                    problem("delivery.\(key)", "must be from 1 to \(maximum)")
                }
            }
        }
        if let value = bool(table, "delivery", "starttls") { delivery.startTLS = value }
        if let text = string(table, "delivery", "postmaster"), !text.isEmpty {
            if text.contains("@"), !text.contains(where: { $0 == " " || $0 == "<" || $0 == ">" }) {
                delivery.postmaster = text
            } else {
                problem("delivery.postmaster", "\"\(text)\": expected an address such as postmaster@example.org")
            }
        }
        return delivery
    }

    /// local = "maildir" / "lmtp:unix:" path / "lmtp:" host ":" port
    mutating func localDelivery(_ text: String) -> LocalDelivery? {
        let key = "delivery.local"
        if text == "maildir" { return .maildir }
        guard text.hasPrefix("lmtp:") else {
            problem(key, "\"\(text)\": expected \"maildir\", \"lmtp:unix:/path\" or \"lmtp:host:port\"")
            return nil
        }
        let target = String(text.dropFirst("lmtp:".count))
        if target.hasPrefix("unix:") {
            let socket = String(target.dropFirst("unix:".count))
            guard !socket.isEmpty else {
                problem(key, "\"\(text)\": the LMTP socket path is missing")
                return nil
            }
            return .lmtpUnix(path: ConfigurationPath.resolve(socket, against: baseDirectory))
        }
        return serviceAddress(target, key: key, defaultPort: nil).map { .lmtpTCP($0) }
    }

    /// relayhost = "[" host "]" [ ":" port ] / host [ ":" port ]   (Postfix's notation)
    mutating func relayhost(_ text: String) -> Relayhost? {
        let key = "delivery.relayhost"
        guard text.hasPrefix("[") else {
            guard let address = serviceAddress(text, key: key, defaultPort: 25) else { return nil }
            return Relayhost(host: address.host, port: address.port, lookupMX: address.ipAddress == nil)
        }
        guard let close = text.firstIndex(of: "]") else {
            problem(key, "\"\(text)\" has \"[\" without \"]\"")
            return nil
        }
        let host = String(text[text.index(after: text.startIndex)..<close])
        guard IPAddress(host) != nil || DomainSyntax.isValidDomain(host) else {
            problem(key, "\"\(host)\" is not an IP address or host name")
            return nil
        }
        let rest = text[text.index(after: close)...]
        var port = 25
        if !rest.isEmpty {
            guard rest.hasPrefix(":"), let value = Int(rest.dropFirst()), (1...65535).contains(value) else {
                problem(key, "\"\(text)\": port must be a number from 1 to 65535")
                return nil
            }
            port = value
        }
        return Relayhost(host: host, port: port, lookupMX: false)
    }

    mutating func readDNS(_ table: TOMLTable) -> TernConfiguration.DNS {
        checkKeys(table, path: "dns", allowed: ["servers"])
        guard table["servers"] != nil else { return TernConfiguration.DNS() }
        let texts = stringArray(table, "dns", "servers")
        if table["servers"]?.array?.isEmpty == true {
            problem("dns.servers", "must list at least one server (leave it out to use /etc/resolv.conf)")
        }
        var servers: [ServiceAddress] = []
        for (index, text) in texts.enumerated() {
            let key = "dns.servers[\(index)]"
            guard let address = serviceAddress(text, key: key, defaultPort: 53) else { continue }
            guard address.ipAddress != nil else {
                problem(key, "\"\(address.host)\" must be an IP address (a resolver cannot look up its own servers)")
                continue
            }
            servers.append(address)
        }
        return TernConfiguration.DNS(servers: servers.isEmpty ? nil : servers)
    }

    // MARK: - Domains

    mutating func readDomains(_ document: TOMLTable, passwdFile: Bool) -> [LocalDomain] {
        var domains: [(domain: LocalDomain, path: String)] = []
        var seen: [String: String] = [:]
        for (table, path) in tables(document, "", "domains") {
            checkKeys(table, path: path, allowed: ["name", "mailboxes", "aliases"])
            guard table["name"] != nil else {
                problem("\(path).name", "missing")
                continue
            }
            guard let name = string(table, path, "name") else { continue }
            var domainName = name.lowercased()
            if domainName.hasSuffix(".") { domainName.removeLast() }
            guard DomainSyntax.isValidDomain(domainName) else {
                problem("\(path).name", "\"\(name)\" is not a valid domain name")
                continue
            }
            if let first = seen[domainName] {
                problem("\(path).name", "duplicate domain \"\(domainName)\" (also \(first))")
                continue
            }
            seen[domainName] = path

            var mailboxes: [String] = []
            for (index, mailbox) in stringArray(table, path, "mailboxes").enumerated() {
                let key = "\(path).mailboxes[\(index)]"
                if !DomainSyntax.isValidLocalPart(mailbox) {
                    problem(key, "\"\(mailbox)\" is not a valid local part")
                } else if mailboxes.contains(mailbox.lowercased()) {
                    problem(key, "duplicate mailbox \"\(mailbox)\"")
                } else {
                    mailboxes.append(mailbox.lowercased())
                }
            }

            var aliases: [String: [String]] = [:]
            if let value = table["aliases"] {
                if let aliasTable = value.table {
                    for key in aliasTable.keys {
                        let aliasPath = "\(path).aliases.\(key)"
                        guard DomainSyntax.isValidLocalPart(key) else {
                            problem(aliasPath, "\"\(key)\" is not a valid local part")
                            continue
                        }
                        guard aliases[key.lowercased()] == nil else {
                            problem(aliasPath, "duplicate alias \"\(key)\"")
                            continue
                        }
                        if let targets = aliasTargets(aliasTable[key]!, aliasPath) {
                            aliases[key.lowercased()] = targets
                        }
                    }
                } else {
                    problem("\(path).aliases", "expected a table of aliases ({ alias = \"target\" })")
                }
            }
            domains.append((LocalDomain(name: domainName, mailboxes: mailboxes, aliases: aliases), path))
        }
        checkAliases(domains, passwdFile: passwdFile)
        return domains.map(\.domain)
    }

    /// An alias's value: one target or an array of them; a target is a local part of the same
    /// domain or a full address.
    mutating func aliasTargets(_ value: any TOMLValueConvertible, _ path: String) -> [String]? {
        var targets: [(String, String)] = []
        if let text = value.string {
            targets = [(text, path)]
        } else if let array = value.array {
            guard !array.isEmpty else {
                problem(path, "expected at least one target")
                return nil
            }
            for (index, element) in array.enumerated() {
                guard let text = element.string else {
                    problem("\(path)[\(index)]", "expected a string")
                    return nil
                }
                targets.append((text, "\(path)[\(index)]"))
            }
        } else {
            problem(path, "expected a string or an array of strings")
            return nil
        }
        var valid = true
        for (target, key) in targets {
            let ok = target.contains("@") ? DomainSyntax.isValidAddress(target) : DomainSyntax.isValidLocalPart(target)
            if !ok {
                problem(key, "\"\(target)\" is not a local part or an address")
                valid = false
            }
        }
        return valid ? targets.map(\.0) : nil
    }

    /// Loops, over-deep chains and (without a passwd file, which may add users) targets in a
    /// local domain that exist neither as a mailbox nor as an alias.
    mutating func checkAliases(_ domains: [(domain: LocalDomain, path: String)], passwdFile: Bool) {
        let expansion = AliasExpansion(domains: domains.map(\.domain))
        let byName = Dictionary(domains.map { ($0.domain.name, $0.domain) }, uniquingKeysWith: { first, _ in first })
        for (domain, path) in domains {
            for alias in domain.aliases.keys.sorted() {
                let key = "\(path).aliases.\(alias)"
                for message in Set(expansion.resolve(localPart: alias, domain: domain.name).problems).sorted() {
                    problem(key, message)
                }
                guard !passwdFile else { continue }
                for target in domain.aliases[alias] ?? [] {
                    let (localPart, domainName) =
                        target.contains("@")
                        ? (
                            String(target[..<target.lastIndex(of: "@")!]).lowercased(),
                            String(target[target.index(after: target.lastIndex(of: "@")!)...])
                        )
                        : (target, domain.name)
                    guard let targetDomain = byName[domainName],
                        !targetDomain.hasMailbox(localPart), targetDomain.aliasTargets(of: localPart) == nil
                    else { continue }
                    problem(key, "\"\(target)\" is neither a mailbox nor an alias of \(domainName)")
                }
            }
        }
    }

    // MARK: - Values

    /// Reports every key of `table` that is not in `allowed`.
    mutating func checkKeys(_ table: TOMLTable, path: String, allowed: Set<String>) {
        for key in table.keys where !allowed.contains(key) {
            problem(Self.join(path, key), "unknown key")
        }
    }

    static func join(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// A sub-table `[name]` of the document; nil (with a problem) when it is something else.
    mutating func section(_ document: TOMLTable, _ name: String, path: String = "") -> TOMLTable? {
        guard let value = document[name] else { return nil }
        guard let table = value.table else {
            let fullKey = Self.join(path, name)
            problem(fullKey, "expected a table ([\(fullKey)])")
            return nil
        }
        return table
    }

    /// `[[name]]` array tables (or an array of inline tables), each with its key path.
    mutating func tables(_ table: TOMLTable, _ path: String, _ key: String) -> [(table: TOMLTable, path: String)] {
        let fullKey = Self.join(path, key)
        guard let value = table[key] else { return [] }
        guard let array = value.array else {
            problem(fullKey, "expected an array of tables ([[\(fullKey)]] or [{ … }])")
            return []
        }
        var result: [(TOMLTable, String)] = []
        for (index, element) in array.enumerated() {
            guard let table = element.table else {
                problem("\(fullKey)[\(index)]", "expected a table")
                continue
            }
            result.append((table, "\(fullKey)[\(index)]"))
        }
        return result
    }

    mutating func string(_ table: TOMLTable, _ path: String, _ key: String) -> String? {
        guard let value = table[key] else { return nil }
        guard let text = value.string else {
            problem(Self.join(path, key), "expected a string")
            return nil
        }
        return text
    }

    mutating func integer(_ table: TOMLTable, _ path: String, _ key: String) -> Int? {
        guard let value = table[key] else { return nil }
        guard let number = value.int else {
            problem(Self.join(path, key), "expected an integer")
            return nil
        }
        return number
    }

    mutating func bool(_ table: TOMLTable, _ path: String, _ key: String) -> Bool? {
        guard let value = table[key] else { return nil }
        guard let flag = value.bool else {
            problem(Self.join(path, key), "expected true or false")
            return nil
        }
        return flag
    }

    /// An array of strings; problems for a non-array and for each non-string element.
    mutating func stringArray(_ table: TOMLTable, _ path: String, _ key: String) -> [String] {
        let fullKey = Self.join(path, key)
        guard let value = table[key] else { return [] }
        guard let array = value.array else {
            problem(fullKey, "expected an array of strings")
            return []
        }
        var strings: [String] = []
        for (index, element) in array.enumerated() {
            guard let text = element.string else {
                problem("\(fullKey)[\(index)]", "expected a string")
                continue
            }
            strings.append(text)
        }
        return strings
    }

    mutating func duration(_ table: TOMLTable, _ path: String, _ key: String) -> Duration? {
        let fullKey = Self.join(path, key)
        guard let value = table[key] else { return nil }
        guard let text = value.string else {
            problem(fullKey, "expected a duration such as \"90s\", \"5m\", \"4h\" or \"5d\"")
            return nil
        }
        guard let duration = Duration(configurationText: text) else {
            problem(fullKey, "\"\(text)\" is not a duration (such as \"90s\", \"5m\", \"4h\" or \"5d\")")
            return nil
        }
        return duration
    }

    mutating func positiveDuration(_ text: String, key: String) -> Duration? {
        guard let duration = Duration(configurationText: text) else {
            problem(key, "\"\(text)\" is not a duration (such as \"90s\", \"5m\", \"4h\" or \"5d\")")
            return nil
        }
        guard duration > .zero else {
            problem(key, "must be longer than 0s")
            return nil
        }
        return duration
    }

    /// A file path; relative to the configuration file's folder.
    mutating func path(_ table: TOMLTable, _ path: String, _ key: String) -> String? {
        guard let text = string(table, path, key) else { return nil }
        guard !text.isEmpty else {
            problem(Self.join(path, key), "must not be empty")
            return nil
        }
        return ConfigurationPath.resolve(text, against: baseDirectory)
    }

    mutating func addresses(_ table: TOMLTable, _ path: String, _ key: String) -> [ServiceAddress] {
        var result: [ServiceAddress] = []
        for (index, text) in stringArray(table, path, key).enumerated() {
            if let address = serviceAddress(text, key: "\(path).\(key)[\(index)]", defaultPort: nil) {
                result.append(address)
            }
        }
        return result
    }

    mutating func serviceAddress(_ text: String, key: String, defaultPort: Int?) -> ServiceAddress? {
        switch ServiceAddress.parse(text, defaultPort: defaultPort) {
        case .success(let address): return address
        case .failure(let error):
            problem(key, error.message)
            return nil
        }
    }
}
