import NIOCore

/// Where a filter listens: a TCP host and port, or a Unix socket.
public enum FilterEndpoint: Sendable, Hashable, CustomStringConvertible {
    /// A host name or address literal and a port. Names are resolved by the system resolver
    /// (getaddrinfo) at each connect; configure an address to avoid it.
    case tcp(host: String, port: Int)
    /// The path of a Unix-domain stream socket.
    case unix(path: String)

    /// Parses the forms configurations use: `host:port`, `[ipv6]:port`, `inet:host:port`
    /// (Postfix's milter syntax), `http://host:port/` (rspamd; plain HTTP only),
    /// `unix:/path` or `/path`. A TCP form without a port takes `defaultPort`; nil for
    /// anything else.
    public init?(_ text: String, defaultPort: Int? = nil) {
        var rest = Substring(text)
        if rest.hasPrefix("unix:") || rest.hasPrefix("local:") {
            rest = rest.drop(while: { $0 != ":" }).dropFirst()
            guard rest.hasPrefix("/") else { return nil }
        }
        if rest.hasPrefix("/") {
            guard !rest.utf8.contains(0) else { return nil }
            self = .unix(path: String(rest))
            return
        }
        var defaultPort = defaultPort
        if rest.hasPrefix("inet:") {
            rest = rest.dropFirst(5)
        } else if rest.lowercased().hasPrefix("http://") {
            rest = rest.dropFirst(7)
            if rest.hasSuffix("/") { rest = rest.dropLast() }
            defaultPort = defaultPort ?? 80
        }
        let host: Substring
        var portText: Substring?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { return nil }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return nil }
                portText = after.dropFirst()
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
            // A bare IPv6 address has colons but no port.
            guard !host.contains(":") else { return nil }
        } else {
            host = rest
        }
        guard !host.isEmpty, host.allSatisfy({ $0.isLetter || $0.isNumber || ".-_:".contains($0) }),
            host.unicodeScalars.allSatisfy(\.isASCII)
        else { return nil }
        let port: Int
        if let portText {
            guard let value = Int(portText), (1...65535).contains(value), portText.allSatisfy(\.isNumber) else {
                return nil
            }
            port = value
        } else {
            guard let defaultPort else { return nil }
            port = defaultPort
        }
        self = .tcp(host: String(host), port: port)
    }

    /// `127.0.0.1:783`, `[::1]:11333`, `unix:/run/milter.sock`.
    public var description: String {
        switch self {
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): "unix:\(path)"
        }
    }
}

/// How long a filter may take: to accept the connection, and for the whole exchange
/// (connect, request, answer). A filter that hangs costs the SMTP session at most `total`.
public struct FilterTimeouts: Sendable, Hashable {
    public var connect: TimeAmount
    public var total: TimeAmount

    /// The defaults leave a slow scan (DNS-based rules, large messages) room within the
    /// client's 10-minute wait for the reply to the end of data (RFC 5321 §4.5.3.2.6).
    public init(connect: TimeAmount = .seconds(10), total: TimeAmount = .seconds(120)) {
        self.connect = connect
        self.total = total
    }
}
