import MailDelivery
import TOMLKit

extension TernConfiguration {
    /// How the client side secures its connections beyond opportunistic STARTTLS (SPEC §2.5):
    /// `[tls_policy]`, `[mta_sts]`, `[dane]` and `[delivery] tls_ca_file`.
    public struct OutboundTLS: Sendable, Hashable {
        /// `[tls_policy]`: `example.com` (that domain) or `.example.com` (its subdomains) → the
        /// level its mail gets, overriding MTA-STS and DANE. Keys in lower case.
        public var policies: [String: TLSSecurityLevel] = [:]
        /// `[delivery] tls_ca_file`: PEM certificates trusted beside the system's bundle when
        /// verifying exchangers and MTA-STS policy servers; absolute path.
        public var caFile: String?
        /// `[dane] enabled`: use DNSSEC-validated TLSA records (RFC 7672).
        public var dane = true
        /// `[mta_sts] enabled`: fetch and apply MTA-STS policies (RFC 8461).
        public var mtaSTS = true
        /// `[mta_sts] https_port`: where policy servers are reached (RFC 8461: 443).
        public var mtaSTSPort = 443
        /// `[mta_sts] fetch_timeout`: the whole HTTPS exchange for one policy.
        public var mtaSTSFetchTimeout: Duration = .seconds(10)
        public var tlsReporting = TLSReporting()

        public init() {}
    }

    /// `[tls_rpt]`: SMTP TLS Reporting (RFC 8460) about outbound deliveries.
    public struct TLSReporting: Sendable, Hashable {
        /// `enabled`: record TLS results and send daily reports to domains that ask for them.
        public var enabled = true
        /// `organization`: the reports' `organization-name`; nil: the hostname.
        public var organization: String?
        /// `contact`: the reports' `contact-info`; nil: the postmaster address.
        public var contact: String?
        /// `period`: the report period, one day; tests make it seconds.
        public var period: Duration = .seconds(86400)
        /// `https_port`: the port of `https:` report URIs that name none (443).
        public var httpsPort = 443
        /// `upload_timeout`: the whole HTTPS exchange of one report.
        public var uploadTimeout: Duration = .seconds(30)

        public init() {}
    }
}

extension ConfigurationReader {
    /// The sections of `OutboundTLS`; `delivery` is the `[delivery]` table, if any, for
    /// `tls_ca_file` (its other keys are `readDelivery`'s).
    mutating func readOutboundTLS(_ document: TOMLTable, delivery: TOMLTable?) -> TernConfiguration.OutboundTLS {
        var outbound = TernConfiguration.OutboundTLS()
        if let delivery, let file = path(delivery, "delivery", "tls_ca_file") {
            do throws(TLSPolicyError) {
                _ = try TrustAnchors.validate(file: file)
                outbound.caFile = file
            } catch {
                problem("delivery.tls_ca_file", error.description)
            }
        }
        if let table = section(document, "tls_policy") { outbound.policies = readTLSPolicy(table) }
        if let table = section(document, "mta_sts") {
            checkKeys(table, path: "mta_sts", allowed: ["enabled", "https_port", "fetch_timeout"])
            if let value = bool(table, "mta_sts", "enabled") { outbound.mtaSTS = value }
            if let port = integer(table, "mta_sts", "https_port") {
                if (1...65535).contains(port) {
                    outbound.mtaSTSPort = port
                } else {
                    problem("mta_sts.https_port", "must be a port number from 1 to 65535")
                }
            }
            if let text = string(table, "mta_sts", "fetch_timeout"),
                let value = positiveDuration(text, key: "mta_sts.fetch_timeout")
            {
                outbound.mtaSTSFetchTimeout = value
            }
        }
        if let table = section(document, "tls_rpt") { outbound.tlsReporting = readTLSReporting(table) }
        if let table = section(document, "dane") {
            checkKeys(table, path: "dane", allowed: ["enabled"])
            if let value = bool(table, "dane", "enabled") { outbound.dane = value }
        }
        return outbound
    }

    /// `[tls_rpt]`.
    mutating func readTLSReporting(_ table: TOMLTable) -> TernConfiguration.TLSReporting {
        var reporting = TernConfiguration.TLSReporting()
        checkKeys(
            table, path: "tls_rpt",
            allowed: ["enabled", "organization", "contact", "period", "https_port", "upload_timeout"])
        if let value = bool(table, "tls_rpt", "enabled") { reporting.enabled = value }
        if let text = string(table, "tls_rpt", "organization") {
            if text.isEmpty || text.count > 200 || text.unicodeScalars.contains(where: { $0.value < 0x20 }) {
                problem("tls_rpt.organization", "must be a name of 1 to 200 printable characters")
            } else {
                reporting.organization = text
            }
        }
        if let text = string(table, "tls_rpt", "contact") {
            if DomainSyntax.isValidAddress(text) {
                reporting.contact = text
            } else {
                problem("tls_rpt.contact", "\"\(text)\": expected an address such as tls-reports@example.org")
            }
        }
        if let text = string(table, "tls_rpt", "period"), let value = positiveDuration(text, key: "tls_rpt.period") {
            if value.components.seconds >= 1 {
                reporting.period = value
            } else {
                problem("tls_rpt.period", "must be at least one second")
            }
        }
        if let port = integer(table, "tls_rpt", "https_port") {
            if (1...65535).contains(port) {
                reporting.httpsPort = port
            } else {
                problem("tls_rpt.https_port", "must be a port number from 1 to 65535")
            }
        }
        if let text = string(table, "tls_rpt", "upload_timeout"),
            let value = positiveDuration(text, key: "tls_rpt.upload_timeout")
        {
            reporting.uploadTimeout = value
        }
        return reporting
    }

    /// `"example.com" = "verify"`, `".example.com" = "encrypt"` (every subdomain).
    mutating func readTLSPolicy(_ table: TOMLTable) -> [String: TLSSecurityLevel] {
        var policies: [String: TLSSecurityLevel] = [:]
        // In the order written, so that a duplicate is the later line.
        for key in table.keys.sorted(by: {
            (lines.exactLine(for: "tls_policy.\($0)") ?? .max, $0) < (
                lines.exactLine(for: "tls_policy.\($1)") ?? .max, $1
            )
        }) {
            let path = "tls_policy.\(key)"
            var name = key.lowercased()
            if name.hasSuffix(".") { name.removeLast() }
            let domain = name.hasPrefix(".") ? String(name.dropFirst()) : name
            guard DomainSyntax.isValidDomain(domain) else {
                problem(path, "\"\(key)\" is not a domain name (or .domain for its subdomains)")
                continue
            }
            guard let text = string(table, "tls_policy", key) else { continue }
            guard let level = TLSSecurityLevel(rawValue: text) else {
                problem(path, "\"\(text)\": expected \"none\", \"may\", \"encrypt\", \"verify\" or \"dane\"")
                continue
            }
            guard policies[name] == nil else {
                problem(path, "duplicate entry for \"\(name)\"")
                continue
            }
            policies[name] = level
        }
        return policies
    }
}
