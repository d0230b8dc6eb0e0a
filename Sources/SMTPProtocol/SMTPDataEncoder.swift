import NIOCore

/// Streaming DATA encoder for the client side: dot-stuffing (RFC 5321 §4.5.2) and the final
/// `"." CRLF`.
///
/// Line ends are normalised as the content streams: a bare LF or a bare CR becomes CRLF. Sending
/// them unchanged would let a receiver that treats them as line ends see a line start where the
/// encoder saw none, and so an unstuffed `"." CRLF` (SMTP smuggling through Tern).
public struct SMTPDataEncoder: Sendable {
    private var isAtLineStart = true
    private var hasPendingCR = false

    public init() {}

    /// Appends the stuffed form of `content` to `output`.
    public mutating func encode(_ content: ByteBuffer, into output: inout ByteBuffer) {
        output.reserveCapacity(minimumWritableBytes: content.readableBytes + 8)
        content.withUnsafeReadableBytes { bytes in
            var runStart = 0
            var index = 0
            let count = bytes.count
            func flush(upTo end: Int) {
                if end > runStart { output.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[runStart..<end])) }
            }
            while index < count {
                let byte = bytes[index]
                if hasPendingCR {
                    hasPendingCR = false
                    output.writeStaticString("\r\n")
                    isAtLineStart = true
                    if byte == 10 {
                        index += 1
                        runStart = index
                        continue
                    }
                }
                if isAtLineStart {
                    isAtLineStart = false
                    if byte == UInt8(ascii: ".") { output.writeInteger(UInt8(ascii: ".")) }
                }
                switch byte {
                case 13:
                    flush(upTo: index)
                    if index + 1 < count, bytes[index + 1] == 10 {
                        output.writeStaticString("\r\n")
                        index += 2
                        isAtLineStart = true
                    } else if index + 1 == count {
                        hasPendingCR = true
                        index += 1
                    } else {
                        output.writeStaticString("\r\n")
                        index += 1
                        isAtLineStart = true
                    }
                    runStart = index
                case 10:
                    flush(upTo: index)
                    output.writeStaticString("\r\n")
                    index += 1
                    runStart = index
                    isAtLineStart = true
                default:
                    // Copy the rest of the line in one run.
                    var scan = index + 1
                    while scan < count, bytes[scan] != 13, bytes[scan] != 10 { scan += 1 }
                    index = scan
                }
            }
            flush(upTo: count)
        }
    }

    /// Ends the content with CRLF if it does not already, then writes the end of data.
    public mutating func finish(into output: inout ByteBuffer) {
        if hasPendingCR || !isAtLineStart {
            output.writeStaticString("\r\n")
        }
        output.writeStaticString(".\r\n")
        hasPendingCR = false
        isAtLineStart = true
    }

    /// Stuffs a whole message at once: `encode` then `finish`.
    public static func encode(_ content: ByteBuffer) -> ByteBuffer {
        var encoder = SMTPDataEncoder()
        var output = ByteBuffer()
        encoder.encode(content, into: &output)
        encoder.finish(into: &output)
        return output
    }
}
