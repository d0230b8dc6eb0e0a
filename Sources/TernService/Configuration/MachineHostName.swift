#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// This machine's name, the default `hostname`: the fully qualified name when the resolver
/// knows one (`getaddrinfo` with `AI_CANONNAME`, as Postfix's myhostname does), otherwise
/// `gethostname()` as it is, and `localhost` when even that fails.
public enum MachineHostName {
    /// Looked up once per process: the resolver may be slow, and the name does not change
    /// under a running server.
    public static func current() -> String { cached }

    private static let cached = lookUp()

    private static func lookUp() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard !name.isEmpty else { return "localhost" }
        if name.contains(".") { return name }

        var hints = addrinfo()
        hints.ai_flags = AI_CANONNAME
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(name, nil, &hints, &result) == 0, let first = result else { return name }
        defer { freeaddrinfo(result) }
        guard let canonical = first.pointee.ai_canonname else { return name }
        let fullName = String(cString: canonical)
        return fullName.contains(".") && DomainSyntax.isValidDomain(fullName) ? fullName.lowercased() : name
    }
}
