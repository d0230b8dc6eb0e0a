import NIOCore

/// Watches message content as it streams past (after dot-unstuffing) and learns what the
/// server needs from the header section without holding it: its size, the number of
/// `Received:` fields (RFC 5321 §6.3 loop detection) and whether some fields are present.
/// Feed it every chunk in order; it keeps only a bounded prefix of the current line.
public struct HeaderSectionScanner: Sendable {
    /// Fields whose presence a submission service cares about (RFC 6409 §8).
    public struct Presence: OptionSet, Sendable, Hashable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let messageID = Presence(rawValue: 1)
        public static let date = Presence(rawValue: 2)
        public static let from = Presence(rawValue: 4)
    }

    /// Octets of the header section, up to and including the empty line.
    public private(set) var headerSize = 0
    public private(set) var receivedCount = 0
    public private(set) var presence: Presence = []
    /// True once the empty line that ends the header section has been seen.
    public private(set) var headerComplete = false

    /// The first octets of the current line, enough to recognise a field name.
    private var linePrefix: [UInt8] = []
    private var lineLength = 0
    /// Still inside the field name of the current line (before its colon).
    private var inFieldName = true
    private var previousWasCR = false
    private static let prefixLength = 16

    public init() {}

    public mutating func scan(_ chunk: ByteBuffer) {
        guard !headerComplete else { return }
        chunk.withUnsafeReadableBytes { bytes in
            for byte in bytes {
                if byte == UInt8(ascii: "\n") && previousWasCR {
                    headerSize += 1
                    endLine()
                    if headerComplete { return }
                    continue
                }
                previousWasCR = byte == UInt8(ascii: "\r")
                if previousWasCR { headerSize += 1; continue }
                if lineLength == 0 && (byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t")) {
                    inFieldName = false  // continuation of the field above
                } else if inFieldName {
                    if byte == UInt8(ascii: ":") && lineLength > 0 {
                        inFieldName = false
                    } else if byte < 33 || byte > 126 {
                        // RFC 5322 §2.2: field names are printable ASCII without ":" and space.
                        // This line is body: the header section has ended before it.
                        headerComplete = true
                        return
                    }
                }
                lineLength += 1
                headerSize += 1
                if linePrefix.count < Self.prefixLength { linePrefix.append(byte) }
            }
        }
    }

    private mutating func endLine() {
        defer {
            linePrefix.removeAll(keepingCapacity: true)
            lineLength = 0
            inFieldName = true
            previousWasCR = false
        }
        // An empty line, or a line that never reached a colon, ends the header section.
        if lineLength == 0 || inFieldName {
            headerComplete = true
            return
        }
        if linePrefix[0] == UInt8(ascii: " ") || linePrefix[0] == UInt8(ascii: "\t") { return }
        if hasName("received:") { receivedCount += 1 }
        if hasName("message-id:") { presence.insert(.messageID) }
        if hasName("date:") { presence.insert(.date) }
        if hasName("from:") { presence.insert(.from) }
    }
    /// Field names are case-insensitive (RFC 5322 §1.2.2); `name` is lower case with its colon.
    /// Whitespace before the colon (obsolete syntax, RFC 5322 §4.5) is not recognised.
    private func hasName(_ name: StaticString) -> Bool {
        let count = name.utf8CodeUnitCount
        guard linePrefix.count >= count else { return false }
        return name.withUTF8Buffer { expected in
            for index in 0..<count {
                var byte = linePrefix[index]
                if byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") { byte += 32 }
                if byte != expected[index] { return false }
            }
            return true
        }
    }
}
