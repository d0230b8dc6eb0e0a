/// A shell-style pattern as rules write them: `*` matches any run of characters, `?` one
/// character, everything else itself, without regard to ASCII case (`*@Example.COM` matches
/// `joe@example.com`). Matching takes time proportional to the pattern's length times the
/// text's, whatever the pattern: hostile headers cannot make it backtrack exponentially.
public struct WildcardPattern: Sendable, Hashable, CustomStringConvertible {
    public let description: String
    private let pattern: [UInt8]

    public init(_ text: String) {
        self.description = text
        self.pattern = Array(text.utf8).map(Self.folded)
    }

    public func matches(_ text: some StringProtocol) -> Bool {
        let text = Array(text.utf8)
        // The classic two-pointer match: on a mismatch, the last `*` absorbs one more
        // character. Each step moves forward in the text or in the pattern.
        var p = 0
        var t = 0
        var star: Int?
        var starText = 0
        while t < text.count {
            if p < pattern.count, pattern[p] == UInt8(ascii: "?") || pattern[p] == Self.folded(text[t]) {
                p += 1
                t += 1
            } else if p < pattern.count, pattern[p] == UInt8(ascii: "*") {
                star = p
                starText = t
                p += 1
            } else if let star {
                p = star + 1
                starText += 1
                t = starText
            } else {
                return false
            }
        }
        while p < pattern.count, pattern[p] == UInt8(ascii: "*") { p += 1 }
        return p == pattern.count
    }

    private static func folded(_ byte: UInt8) -> UInt8 {
        (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte | 0x20 : byte
    }
}
