import NIOCore

/// A domain name (RFC 1035 §3.1): a sequence of labels of raw octets, the root label implied.
/// Equality and hashing ignore ASCII case (RFC 4343 §3); the labels keep the case they came in.
public struct DNSName: Sendable, Hashable, CustomStringConvertible, ExpressibleByStringLiteral {
    /// The labels from the most specific to the TLD, without the empty root label.
    public let labels: [[UInt8]]

    /// The root name, `.`.
    public static let root = DNSName(validatedLabels: [])

    init(validatedLabels: [[UInt8]]) {
        self.labels = validatedLabels
    }

    /// A name from raw labels; throws when a label is empty or too long or the name too long.
    public init(labels: [[UInt8]]) throws(DNSFormatError) {
        for label in labels where label.isEmpty || label.count > DNSLimits.labelLength {
            throw .badLabel
        }
        self.labels = labels
        guard wireLength <= DNSLimits.nameLength else { throw .nameTooLong }
    }

    /// Parses presentation form (RFC 1035 §5.1): labels separated by dots, an optional final
    /// dot, `\X` for a literal octet X and `\DDD` for a decimal octet. `""` and `"."` are the root.
    public init(_ text: String) throws(DNSFormatError) {
        var labels: [[UInt8]] = []
        var label: [UInt8] = []
        var bytes = Array(text.utf8)[...]
        if bytes.elementsEqual([UInt8(ascii: ".")]) { bytes = [] }
        var sawLabel = false
        while let byte = bytes.popFirst() {
            switch byte {
            case UInt8(ascii: "."):
                guard !label.isEmpty else { throw .badLabel }
                labels.append(label)
                label = []
                sawLabel = false
                continue
            case UInt8(ascii: "\\"):
                guard let next = bytes.popFirst() else { throw .badLabel }
                if Self.isDigit(next) {
                    guard bytes.count >= 2, Self.isDigit(bytes[bytes.startIndex]),
                        Self.isDigit(bytes[bytes.startIndex + 1])
                    else { throw .badLabel }
                    let value =
                        Int(next - 48) * 100 + Int(bytes.popFirst()! - 48) * 10
                        + Int(bytes.popFirst()! - 48)
                    guard value <= 255 else { throw .badLabel }
                    label.append(UInt8(value))
                } else {
                    label.append(next)
                }
            default:
                label.append(byte)
            }
            sawLabel = true
            guard label.count <= DNSLimits.labelLength else { throw .badLabel }
        }
        if sawLabel { labels.append(label) }
        try self.init(labels: labels)
    }

    /// `ExpressibleByStringLiteral` is for fixtures and tests: an invalid literal traps.
    public init(stringLiteral value: String) {
        do {
            try self.init(value)
        } catch {
            preconditionFailure("invalid DNS name literal \(value): \(error)")
        }
    }

    public var isRoot: Bool { labels.isEmpty }

    /// Octets in wire form: each label with its length octet, plus the root octet.
    public var wireLength: Int { labels.reduce(1) { $0 + $1.count + 1 } }

    /// Presentation form without the final dot (`.` for the root); octets outside printable
    /// ASCII and the characters `.` and `\` are escaped, so the text parses back to this name.
    public var description: String {
        if labels.isEmpty { return "." }
        var text = ""
        for (index, label) in labels.enumerated() {
            if index > 0 { text += "." }
            for byte in label {
                switch byte {
                case UInt8(ascii: "."), UInt8(ascii: "\\"):
                    text += "\\" + String(UnicodeScalar(byte))
                case 0x21...0x7E:
                    text.unicodeScalars.append(UnicodeScalar(byte))
                default:
                    let digits = String(byte)
                    text += "\\" + String(repeating: "0", count: 3 - digits.count) + digits
                }
            }
        }
        return text
    }

    /// Writes the name in wire form, uncompressed (RFC 1035 §3.1).
    public func write(to buffer: inout ByteBuffer) {
        for label in labels {
            buffer.writeInteger(UInt8(label.count))
            buffer.writeBytes(label)
        }
        buffer.writeInteger(UInt8(0))
    }

    /// True when this name is `other` or below it.
    public func isSubdomain(of other: DNSName) -> Bool {
        guard labels.count >= other.labels.count else { return false }
        return zip(labels.suffix(other.labels.count), other.labels).allSatisfy(Self.labelsEqual)
    }

    public static func == (lhs: DNSName, rhs: DNSName) -> Bool {
        lhs.labels.count == rhs.labels.count && zip(lhs.labels, rhs.labels).allSatisfy(labelsEqual)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(labels.count)
        for label in labels {
            hasher.combine(label.count)
            for byte in label { hasher.combine(Self.lowercased(byte)) }
        }
    }

    private static func labelsEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { lowercased($0) == lowercased($1) }
    }

    private static func lowercased(_ byte: UInt8) -> UInt8 {
        (0x41...0x5A).contains(byte) ? byte | 0x20 : byte
    }

    private static func isDigit(_ byte: UInt8) -> Bool { (0x30...0x39).contains(byte) }
}
