import NIOCore

/// Checks raw content (BDAT chunks, RFC 3030) for what the DATA decoder checks in dot-stuffed
/// content: bare CR, bare LF, NUL and over-long lines. State carries across chunks, so every
/// split of the content finds the same violations.
public struct ContentLineCheck: Sendable {
    public private(set) var violations: DataViolations = []
    private let maxLineLength: Int
    private var lineLength = 0
    private var previousWasCR = false

    public init(maxLineLength: Int) {
        self.maxLineLength = maxLineLength
    }

    public mutating func scan(_ content: ByteBuffer) {
        content.withUnsafeReadableBytes { bytes in
            for byte in bytes {
                if previousWasCR {
                    previousWasCR = false
                    if byte == 10 {
                        lineLength = 0
                        continue
                    }
                    violations.insert(.bareCR)
                    lineLength += 1
                }
                switch byte {
                case 13:
                    // Counted once we know whether an LF follows.
                    previousWasCR = true
                    continue
                case 10:
                    violations.insert(.bareLF)
                    lineLength = 0
                    continue
                case 0:
                    violations.insert(.nul)
                default:
                    break
                }
                lineLength += 1
                // The limit counts the line's CRLF (RFC 5321 §4.5.3.1.6).
                if lineLength + 2 > maxLineLength { violations.insert(.longLine) }
            }
        }
    }
}
