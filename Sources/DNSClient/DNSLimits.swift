/// Every size limit and default of the DNS client in one place, with the RFC that sets it.
public enum DNSLimits {
    /// RFC 1035 §2.3.4: a label is at most 63 octets.
    public static let labelLength = 63
    /// RFC 1035 §2.3.4: a name is at most 255 octets in wire form, length octets included.
    public static let nameLength = 255
    /// Compression pointers followed while reading one name (RFC 1035 §4.1.4). Pointers must
    /// also point strictly backwards, which alone guarantees termination; this bounds the work.
    public static let compressionPointers = 64
    /// RFC 6891 §6.2.5 and DNS Flag Day 2020: 1232 octets of UDP payload avoid IP fragmentation
    /// on nearly every path, and fragments are what off-path spoofing attacks ride on.
    public static let ednsUDPPayloadSize: UInt16 = 1232
    /// Receive buffer for one UDP reply: the largest UDP payload, so that a server that ignores
    /// our advertised size still yields a whole datagram rather than a truncated one.
    public static let udpReceiveBuffer = 65_535
    /// CNAME records followed inside one answer before the chain counts as a loop.
    public static let cnameChain = 8
    /// RFC 1035 §4.2: name servers listen on port 53, UDP and TCP.
    public static let port = 53
    /// Per-try timeout of `StubResolver` (glibc's resolver uses 5 s; a mail server can retry).
    public static let timeout: Duration = .seconds(2)
    /// Rounds over the server list of `StubResolver` (glibc's `attempts` default is 2).
    public static let attempts = 2
}
