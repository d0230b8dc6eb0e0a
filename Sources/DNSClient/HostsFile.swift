#if canImport(Glibc)
    import Glibc
#endif

/// The hosts file (`/etc/hosts`, hosts(5)): names the administrator fixed for addresses. The
/// system resolver consults it before DNS (nsswitch's `hosts: files dns`), and so does Tern:
/// `127.0.0.1` is `localhost` without asking anyone, and local hosts resolve even when DNS is
/// slow or down. Read once; addresses are compared in canonical form.
public struct HostsFile: Sendable {
    /// Canonical address text → names, in file order (the first is the canonical name).
    private var namesByAddress: [String: [String]] = [:]
    /// Lower-case name → canonical address texts.
    private var addressesByName: [String: [String]] = [:]

    public init(contents: String) {
        for rawLine in contents.split(whereSeparator: { $0 == "\n" }) {
            let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            guard fields.count >= 2, let address = Self.canonical(String(fields[0])) else { continue }
            for field in fields.dropFirst() {
                let name = field.lowercased()
                namesByAddress[address, default: []].append(name)
                addressesByName[name, default: []].append(address)
            }
        }
    }

    /// The system's hosts file, read on first use; empty when it cannot be read.
    public static let system = HostsFile(path: "/etc/hosts")

    public init(path: String) {
        self.init(contents: Self.read(path) ?? "")
    }

    /// The names of `address` (IPv4 or IPv6 text), canonical name first.
    public func names(for address: String) -> [String] {
        Self.canonical(address).flatMap { namesByAddress[$0] } ?? []
    }

    /// The addresses of `name`, in canonical text.
    public func addresses(for name: String) -> [String] {
        var key = name.lowercased()
        if key.hasSuffix(".") { key.removeLast() }
        return addressesByName[key] ?? []
    }

    /// One text form per address, so `::1` and `0:0:0:0:0:0:0:1` meet.
    static func canonical(_ text: String) -> String? {
        if let v4 = IPv4Address(text) { return v4.description }
        if let v6 = IPv6Address(text) { return v6.description }
        return nil
    }

    private static func read(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 8192)
        while bytes.count < 1 << 20 {
            let count = fread(&buffer, 1, buffer.count, file)
            if count <= 0 { break }
            bytes += buffer[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
