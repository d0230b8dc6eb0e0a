import NIOCore

/// One unit out of `SMTPLineFramer.nextLine()`.
public enum SMTPFrame: Sendable, Hashable {
    /// A complete line, without its CRLF.
    case line(ByteBuffer)
    /// A line longer than the limit; its bytes were dropped up to and including its CRLF.
    case lineTooLong
}

/// Splits the input stream into command lines (RFC 5321 §2.3.8: lines end with CRLF).
///
/// Only CR LF ends a line; a bare CR or bare LF is an ordinary byte of the line, so that no
/// peer can make Tern see a line end where a strict server would not (SMTP smuggling). Memory
/// stays bounded: a line that grows past `maxLineLength` is dropped while it arrives and reported
/// once, as `.lineTooLong`, when its CRLF comes, so that replies to pipelined commands stay in
/// order. The same buffer also serves DATA (`readData`) and BDAT (`readRawBytes`), so that the
/// bytes a client pipelines after a command are never lost between modes.
public struct SMTPLineFramer: Sendable {
    /// The longest line accepted, including its CRLF (RFC 5321 §4.5.3.1.4).
    public var maxLineLength: Int

    private var buffer: ByteBuffer
    /// Bytes at the front of `buffer` already searched for CRLF without finding one.
    private var scannedByteCount = 0
    /// True while dropping the rest of an over-long line until its CRLF.
    private var isSkippingLongLine = false

    public init(maxLineLength: Int) {
        precondition(maxLineLength >= 2, "a line limit includes the CRLF")
        self.maxLineLength = maxLineLength
        self.buffer = ByteBuffer()
    }

    /// Bytes received and not yet handed out.
    public var bufferedByteCount: Int { buffer.readableBytes }

    public mutating func append(_ bytes: ByteBuffer) {
        if buffer.readableBytes == 0 {
            // Adopting the incoming buffer avoids a copy on the common one-read-one-line path.
            buffer = bytes
            scannedByteCount = 0
        } else {
            var bytes = bytes
            buffer.writeBuffer(&bytes)
        }
    }

    /// The next complete line, `.lineTooLong` once for each over-long line, or nil when more
    /// bytes are needed.
    public mutating func nextLine() -> SMTPFrame? {
        guard let lineEnd = findCRLF() else {
            let buffered = buffer.readableBytes
            if isSkippingLongLine || buffered > maxLineLength {
                // Keep a trailing CR: it may be the first half of the CRLF that ends the line.
                let endsWithCR = buffered > 0 && buffer.getInteger(at: buffer.writerIndex - 1, as: UInt8.self) == 13
                buffer.moveReaderIndex(forwardBy: endsWithCR ? buffered - 1 : buffered)
                buffer.discardReadBytes()
                scannedByteCount = 0
                isSkippingLongLine = true
            }
            return nil
        }
        let wasSkipping = isSkippingLongLine
        isSkippingLongLine = false
        scannedByteCount = 0
        if wasSkipping || lineEnd + 2 > maxLineLength {
            buffer.moveReaderIndex(forwardBy: lineEnd + 2)
            return .lineTooLong
        }
        let line = buffer.readSlice(length: lineEnd)!
        buffer.moveReaderIndex(forwardBy: 2)
        return .line(line)
    }

    /// Up to `max` buffered bytes as they are (a BDAT chunk, RFC 3030 §2), or nil if none are
    /// buffered.
    public mutating func readRawBytes(max: Int) -> ByteBuffer? {
        guard buffer.readableBytes > 0, max > 0 else { return nil }
        scannedByteCount = 0
        isSkippingLongLine = false
        return buffer.readSlice(length: min(max, buffer.readableBytes))
    }

    /// Feeds the buffered bytes to a DATA decoder; returns what it produced, or nil when nothing
    /// is buffered. After the chunk with `isEnd`, the bytes that followed the end of data stay
    /// buffered for `nextLine()`.
    public mutating func readData(_ decoder: inout SMTPDataDecoder) -> SMTPDataChunk? {
        guard buffer.readableBytes > 0 else { return nil }
        scannedByteCount = 0
        isSkippingLongLine = false
        return decoder.decode(&buffer)
    }

    /// Drops everything buffered. After STARTTLS (RFC 3207 §6) the plaintext a client pipelined
    /// before the handshake must not be taken as commands of the protected session.
    public mutating func discardBuffered() {
        buffer.clear()
        scannedByteCount = 0
        isSkippingLongLine = false
    }

    /// Offset from the reader index of the CR of the first CRLF, searching only the bytes not
    /// searched before.
    private mutating func findCRLF() -> Int? {
        let start = scannedByteCount
        let found: Int? = buffer.withUnsafeReadableBytes { bytes in
            guard bytes.count >= 2, start < bytes.count - 1 else { return nil }
            var index = start
            let last = bytes.count - 1
            while index < last {
                if bytes[index] == 13 {
                    if bytes[index + 1] == 10 { return index }
                }
                index += 1
            }
            return nil
        }
        if found == nil {
            // The last byte may be a CR whose LF has not arrived: search it again next time.
            scannedByteCount = max(0, buffer.readableBytes - 1)
        }
        return found
    }
}
