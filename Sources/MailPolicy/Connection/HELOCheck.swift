import DNSClient

/// Something wrong with a client's HELO/EHLO argument. Rules match on these and weight them;
/// the raw values are the names configuration uses.
public enum HELOFinding: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Neither a domain nor an address literal (RFC 5321 §4.1.1.1, §4.1.2, §4.1.3); Postfix's
    /// `reject_invalid_helo_hostname`.
    case invalidSyntax = "invalid_syntax"
    /// An IP address without the brackets of an address literal (`HELO 192.0.2.1`).
    case bareAddress = "bare_address"
    /// An address (literal or bare) that is not the client's own.
    case addressMismatch = "address_mismatch"
    /// A name of one label, like `HELO mypc`; Postfix's `reject_non_fqdn_helo_hostname`.
    case notFullyQualified = "not_fqdn"
    /// `localhost` and the like (RFC 6761 §6.3) from a client that is not on loopback.
    case localhost
    /// One of our own host names or domains, from a client that is not us.
    case claimsOurName = "our_name"
    /// One of our own addresses, from a client that is not us.
    case claimsOurAddress = "our_address"
    /// The name has no A, AAAA or MX record; Postfix's `reject_unknown_helo_hostname`.
    case unresolvable
    /// The DNS did not say in time, or failed temporarily: a rule may defer, never reject.
    case lookupFailed = "lookup_failed"

    public var description: String { rawValue }
}

/// Checks a HELO/EHLO argument for the lies and mistakes spamware makes: bad syntax, bare or
/// foreign addresses, names that are not fully qualified, claims to be localhost or us, and
/// (with a resolver) names that do not exist. A claim that is true — `localhost` from
/// loopback, our name from one of our addresses — is not a finding.
public enum HELOCheck {
    /// The checks that need no DNS; instant. `ourNames` are our host names and domains (any
    /// case, with or without a final dot), `ourAddresses` the addresses we listen on.
    public static func findings(
        helo: String, client: IPAddress, ourNames: Set<String>, ourAddresses: Set<IPAddress>
    ) -> [HELOFinding] {
        findingsAndName(helo: helo, client: client, ourNames: ourNames, ourAddresses: ourAddresses).findings
    }

    /// All checks: those above, then, for a fully qualified name that is not ours, whether it
    /// has an A, AAAA or MX record, asked at once and bounded by `timeLimit`.
    public static func findings(
        helo: String, client: IPAddress, ourNames: Set<String>, ourAddresses: Set<IPAddress>,
        resolver: any Resolver, timeLimit: Duration = .seconds(5)
    ) async -> [HELOFinding] {
        var (findings, name) = findingsAndName(
            helo: helo, client: client, ourNames: ourNames, ourAddresses: ourAddresses)
        guard let name, findings.isEmpty else { return findings }
        switch await withTimeLimit(timeLimit, { await resolution(of: name, resolver: resolver) }) {
        case .found?: break
        case .notFound?: findings.append(.unresolvable)
        case .failed?, nil: findings.append(.lookupFailed)
        }
        return findings
    }

    /// The findings, and the name to look up in the DNS if any.
    private static func findingsAndName(
        helo: String, client: IPAddress, ourNames: Set<String>, ourAddresses: Set<IPAddress>
    ) -> (findings: [HELOFinding], name: String?) {
        let client = client.unmappedIPv4 ?? client
        let ours = Set(ourAddresses.map { $0.unmappedIPv4 ?? $0 })
        let clientIsUs = isLoopback(client) || ours.contains(client)

        func addressFindings(_ address: IPAddress) -> [HELOFinding] {
            let address = address.unmappedIPv4 ?? address
            var findings: [HELOFinding] = []
            if address != client { findings.append(.addressMismatch) }
            if ours.contains(address) && !clientIsUs { findings.append(.claimsOurAddress) }
            return findings
        }

        if helo.hasPrefix("[") {
            guard helo.hasSuffix("]"), helo.count >= 2, let address = addressLiteral(helo.dropFirst().dropLast())
            else { return ([.invalidSyntax], nil) }
            return (addressFindings(address), nil)
        }
        if let address = IPAddress(helo) {
            return ([.bareAddress] + addressFindings(address), nil)
        }
        guard isDomain(helo) else { return ([.invalidSyntax], nil) }
        let name = helo.lowercased()
        // RFC 6761 §6.3: localhost and names under it are loopback; CentOS and friends still
        // ship localhost.localdomain.
        if name == "localhost" || name.hasSuffix(".localhost") || name == "localhost.localdomain" {
            return (clientIsUs ? [] : [.localhost], nil)
        }
        if !name.contains(".") { return ([.notFullyQualified], nil) }
        let normalisedOurs = Set(
            ourNames.map { $0.hasSuffix(".") ? String($0.dropLast()).lowercased() : $0.lowercased() })
        if normalisedOurs.contains(name) { return (clientIsUs ? [] : [.claimsOurName], nil) }
        return ([], name)
    }

    // Domain     = sub-domain *("." sub-domain)            (RFC 5321 §4.1.2)
    // sub-domain = Let-dig [Ldh-str]
    // Ldh-str    = *( ALPHA / DIGIT / "-" ) Let-dig
    // Labels of at most 63 octets, the name at most 255 (§4.5.3.1.2); a numeric top label would
    // be read as an address (RFC 3696 §2), so it is refused as Postfix's valid_hostname does.
    static func isDomain(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty, bytes.count <= 255 else { return false }
        let labels = bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        for label in labels {
            guard (1...63).contains(label.count), isLetDig(label.first!), isLetDig(label.last!),
                label.allSatisfy({ isLetDig($0) || $0 == UInt8(ascii: "-") })
            else { return false }
        }
        return !labels.last!.allSatisfy(isDigit)
    }

    // address-literal      = "[" ( IPv4-address-literal / IPv6-address-literal /
    //                          General-address-literal ) "]"          (RFC 5321 §4.1.3)
    // IPv4-address-literal = Snum 3("."  Snum)
    // IPv6-address-literal = "IPv6:" IPv6-addr
    // A General-address-literal needs an IANA-registered tag, and none but IPv6 exists.
    static func addressLiteral(_ inner: Substring) -> IPAddress? {
        if inner.utf8.count > 5, inner.prefix(5).lowercased() == "ipv6:" {
            guard let address = IPAddress(inner.dropFirst(5)), !address.isIPv4 else { return nil }
            return address
        }
        // Snum = 1*3DIGIT, representing a decimal integer value in the range 0 through 255:
        // leading zeros are allowed here and read as decimal.
        let parts = inner.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard (1...3).contains(part.count), part.allSatisfy(isDigit) else { return nil }
            let octet = part.reduce(UInt32(0)) { $0 * 10 + UInt32($1 - UInt8(ascii: "0")) }
            guard octet <= 255 else { return nil }
            value = value << 8 | octet
        }
        return .v4(value)
    }

    static func isLoopback(_ address: IPAddress) -> Bool {
        switch address.unmappedIPv4 ?? address {
        case .v4(let value): value >> 24 == 127
        case .v6(let high, let low): high == 0 && low == 1
        }
    }

    private enum Resolution: Sendable {
        case found
        case notFound
        case failed
    }

    /// A, AAAA and MX at once; the first record found settles it.
    private static func resolution(of name: String, resolver: any Resolver) async -> Resolution {
        await withTaskGroup(of: Resolution.self) { group in
            group.addTask {
                do throws(DNSError) { return try await resolver.a(name).value.isEmpty ? .notFound : .found } catch {
                    return outcome(error)
                }
            }
            group.addTask {
                do throws(DNSError) { return try await resolver.aaaa(name).value.isEmpty ? .notFound : .found } catch {
                    return outcome(error)
                }
            }
            group.addTask {
                do throws(DNSError) { return try await resolver.mx(name).value.isEmpty ? .notFound : .found } catch {
                    return outcome(error)
                }
            }
            var result = Resolution.notFound
            for await answer in group {
                switch answer {
                case .found:
                    group.cancelAll()
                    return .found
                case .failed: result = .failed
                case .notFound: break
                }
            }
            return result
        }
    }

    private static func outcome(_ error: DNSError) -> Resolution {
        switch error {
        case .nameNotFound, .noData: .notFound
        default: .failed
        }
    }

    private static func isDigit(_ byte: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }

    private static func isLetDig(_ byte: UInt8) -> Bool {
        isDigit(byte) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte | 0x20)
    }
}
