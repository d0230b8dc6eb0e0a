import MailPolicy

/// A host and port as the configuration writes them: `host:port`, or `[v6]:port` for an IPv6
/// address (RFC 3986 §3.2.2 brackets, so that the port's colon is not read as part of it).
/// Used for listeners, DNS servers, LMTP, spamd.
public struct ServiceAddress: Sendable, Hashable, CustomStringConvertible {
    /// An IP address in text form (IPv6 without brackets) or a domain name.
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` or `[v6]:port`; nil when malformed. See `parse` for the reason.
    public init?(_ text: String, defaultPort: Int? = nil) {
        guard case .success(let address) = Self.parse(text, defaultPort: defaultPort) else { return nil }
        self = address
    }

    /// The host as an IP address, when it is one.
    public var ipAddress: IPAddress? { IPAddress(host) }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// address = ( IPv4address / domain / "[" IPv6address "]" ) [ ":" port ]
    /// The port is required unless `defaultPort` is given; 1–65535.
    static func parse(_ text: String, defaultPort: Int?) -> Result<ServiceAddress, ConfigurationValueError> {
        let host: Substring
        var portText: Substring?
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                return .failure(.init("\"\(text)\" has \"[\" without \"]\""))
            }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":") else { return .failure(.init("\"\(text)\" is not host:port")) }
                portText = rest.dropFirst()
            }
            guard let address = IPAddress(host), !address.isIPv4 else {
                return .failure(.init("\"\(host)\" in brackets is not an IPv6 address"))
            }
        } else {
            let colons = text.filter { $0 == ":" }.count
            if colons > 1 {
                return .failure(.init("\"\(text)\": an IPv6 address needs brackets, as in \"[::1]:25\""))
            }
            if let colon = text.firstIndex(of: ":") {
                host = text[..<colon]
                portText = text[text.index(after: colon)...]
            } else {
                host = text[...]
            }
            guard IPAddress(host) != nil || DomainSyntax.isValidDomain(String(host)) else {
                return .failure(.init("\"\(host)\" is not an IP address or host name"))
            }
        }
        let port: Int
        if let portText {
            guard !portText.isEmpty, portText.count <= 5, portText.allSatisfy({ $0.isASCII && $0.isNumber }),
                let value = Int(portText), (1...65535).contains(value)
            else { return .failure(.init("\"\(text)\": port must be a number from 1 to 65535")) }
            port = value
        } else if let defaultPort {
            port = defaultPort
        } else {
            return .failure(.init("\"\(text)\" has no port (write host:port, or [v6]:port)"))
        }
        return .success(ServiceAddress(host: String(host), port: port))
    }
}

/// A value that did not parse, in words; becomes a `ConfigurationProblem` with its key.
struct ConfigurationValueError: Error, Hashable {
    var message: String

    init(_ message: String) {
        self.message = message
    }
}
