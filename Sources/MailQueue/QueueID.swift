import Foundation

/// A queue ID: 16 characters of Crockford's base32 alphabet (no I, L, O or U), naming a message
/// in logs, in the 250 reply to DATA and in `tern queue` commands.
///
/// The 80 bits are 52 bits of microseconds since 1970 (good until the year 2112), a 12-bit
/// counter and 16 random bits. Within a process the first 64 bits only ever grow, so IDs sort
/// by arrival and never repeat even if the clock steps back; across restarts the store moves the
/// counter past the newest ID it recovered, and the random bits separate processes.
public struct QueueID: Sendable, Hashable, Comparable, CustomStringConvertible, Codable {
    /// Microseconds since 1970 shifted left by 12, plus the counter.
    let sequence: UInt64
    /// Random bits.
    let random: UInt16

    init(sequence: UInt64, random: UInt16) {
        self.sequence = sequence
        self.random = random
    }

    static let alphabet: [UInt8] = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ".utf8)
    static let textLength = 16

    /// Parses the 16-character form (either letter case).
    public init?(_ text: String) {
        var sequence: UInt64 = 0
        var random: UInt16 = 0
        var count = 0
        for byte in text.utf8 {
            count += 1
            guard count <= Self.textLength, let digit = Self.digit(byte) else { return nil }
            // Shift the 80-bit value (sequence:random) left by five and add the digit.
            sequence = (sequence << 5) | UInt64(random >> 11)
            random = (random << 5) | UInt16(digit)
        }
        guard count == Self.textLength else { return nil }
        self.init(sequence: sequence, random: random)
    }

    static func digit(_ byte: UInt8) -> UInt8? {
        let upper = byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z") ? byte - 32 : byte
        return alphabet.firstIndex(of: upper).map(UInt8.init)
    }

    public var description: String {
        var bytes = [UInt8](repeating: 0, count: Self.textLength)
        for position in 0..<Self.textLength {
            // Lowest bit of this five-bit group within the 80-bit value.
            let low = 75 - 5 * position
            let value: UInt64
            if low >= 16 {
                value = sequence >> UInt64(low - 16)
            } else if low + 5 <= 16 {
                value = UInt64(random >> UInt16(low))
            } else {
                value = (sequence << UInt64(16 - low)) | UInt64(random >> UInt16(low))
            }
            bytes[position] = Self.alphabet[Int(value & 31)]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    public static func < (lhs: QueueID, rhs: QueueID) -> Bool {
        (lhs.sequence, lhs.random) < (rhs.sequence, rhs.random)
    }

    /// A new ID, later than every ID generated before in this process.
    public static func generate() -> QueueID {
        let now = UInt64(max(0, Date().timeIntervalSince1970 * 1_000_000)) << 12
        let sequence = generator.next(atLeast: now)
        return QueueID(sequence: sequence, random: UInt16.random(in: .min ... .max))
    }

    /// Makes later IDs of this process sort after `id` (used after recovery).
    static func advance(past id: QueueID) {
        _ = generator.next(atLeast: id.sequence + 1)
    }

    /// The arrival time the ID encodes (to the microsecond).
    public var timestamp: Date {
        Date(timeIntervalSince1970: Double(sequence >> 12) / 1_000_000)
    }

    private static let generator = Generator()

    private final class Generator: @unchecked Sendable {
        private let lock = NSLock()
        private var last: UInt64 = 0

        func next(atLeast floor: UInt64) -> UInt64 {
            lock.lock()
            defer { lock.unlock() }
            last = max(floor, last &+ 1)
            return last
        }
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let id = QueueID(text) else {
            throw DecodingError.dataCorrupted(
                DecodingError.Context(codingPath: decoder.codingPath, debugDescription: "bad queue ID \(text)"))
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
