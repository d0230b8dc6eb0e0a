import NIOCore

/// What was wrong with a message's text, found while it streamed. The content is passed on
/// unchanged; the session refuses the message at the real end of data, so that the rest of it
/// never becomes commands.
public struct DataViolations: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// An LF not preceded by CR (RFC 5321 §2.3.8).
    public static let bareLF = DataViolations(rawValue: 1)
    /// A CR not followed by LF (RFC 5321 §2.3.8).
    public static let bareCR = DataViolations(rawValue: 2)
    /// A NUL octet (RFC 5321 §4.1.4 via RFC 5322 §2.3: text excludes NUL).
    public static let nul = DataViolations(rawValue: 4)
    /// A line longer than the text line limit (RFC 5321 §4.5.3.1.6).
    public static let longLine = DataViolations(rawValue: 8)
}

/// Message content decoded from DATA, and whether the end of data was reached.
public struct SMTPDataChunk: Sendable, Hashable {
    /// Unstuffed content: the message's CRLFs kept, a leading dot of each line removed.
    public var content: ByteBuffer
    /// True when this chunk ends at `CRLF "." CRLF`; the content then ends with the CRLF of the
    /// last line (or is empty).
    public var isEnd: Bool

    public init(content: ByteBuffer, isEnd: Bool) {
        self.content = content
        self.isEnd = isEnd
    }
}

/// Streaming DATA decoder: finds the end of data and removes dot-stuffing (RFC 5321 §4.5.2).
///
/// The end of data is `CRLF "." CRLF`, where the first CRLF ends the message's last line (at the
/// very start, `"." CRLF` alone). Only a real CRLF counts: a bare LF or bare CR never starts or
/// ends a line, so `LF . LF`, `CR . CR`, `LF . CRLF`, `CRLF . LF` and the like are content, and no
/// peer can smuggle a second message past a server that reads the stream differently. The state
/// between chunks is a small enum (a pending CR or a line-start dot is never stored as bytes), so
/// the output is the same however the input is split.
public struct SMTPDataDecoder: Sendable {
    /// The longest text line, including its CRLF (RFC 5321 §4.5.3.1.6).
    public let maxLineLength: Int
    public private(set) var violations: DataViolations = []
    /// Octets of content produced so far.
    public private(set) var contentByteCount = 0
    /// True once the end of data was decoded.
    public var isFinished: Bool { state == .finished }

    private enum State: UInt8, Sendable {
        /// At the start of a line (the start of data counts).
        case lineStart
        /// Inside a line.
        case inLine
        /// After a CR inside a line, not yet emitted.
        case cr
        /// After a dot at the start of a line, which is never emitted.
        case dot
        /// After `"." CR` at the start of a line: an LF now ends data.
        case dotCR
        case finished
    }

    private var state = State.lineStart
    /// Octets of the current line as transmitted, without its CRLF.
    private var lineLength = 0

    public init(maxLineLength: Int = 1000) {
        self.maxLineLength = maxLineLength
    }

    /// Decodes `input`, consuming it up to and including the end of data; bytes after the end
    /// stay in `input`. Without an end, all of `input` is consumed (held-back bytes are state).
    public mutating func decode(_ input: inout ByteBuffer) -> SMTPDataChunk {
        guard state != .finished else { return SMTPDataChunk(content: ByteBuffer(), isEnd: true) }
        var state = self.state
        var lineLength = self.lineLength
        var violations = self.violations
        // The content is built from runs of input copied unchanged. The first run is only
        // remembered: when it is the only one (the common case) the content is a slice of the
        // input and no byte is copied.
        var firstRun: Range<Int>? = nil
        var output: ByteBuffer? = nil
        // A line may hold at most this many octets before its CRLF.
        let lineLimit = maxLineLength - 2
        let consumed = input.withUnsafeReadableBytes { bytes -> Int in
            let count = bytes.count
            var index = 0
            var runStart = 0
            func startOutput() {
                if output == nil {
                    var buffer = ByteBuffer()
                    buffer.reserveCapacity(count + 2)
                    if let run = firstRun {
                        buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[run]))
                        firstRun = nil
                    }
                    output = buffer
                }
            }
            func flush(upTo end: Int) {
                guard end > runStart else { return }
                if output == nil && firstRun == nil {
                    firstRun = runStart..<end
                } else {
                    startOutput()
                    output!.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[runStart..<end]))
                }
            }
            func emit(_ text: StaticString) {
                startOutput()
                output!.writeStaticString(text)
            }
            while index < count {
                let byte = bytes[index]
                switch state {
                case .inLine, .lineStart:
                    if state == .lineStart && byte == UInt8(ascii: ".") {
                        flush(upTo: index)
                        lineLength = 1
                        state = .dot
                        index += 1
                        runStart = index
                        continue
                    }
                    state = .inLine
                    // The hot loop: scan ordinary octets straight off the pointer.
                    var scan = index
                    while scan < count {
                        let octet = bytes[scan]
                        if octet == 13 || octet == 10 || octet == 0 { break }
                        scan += 1
                    }
                    lineLength += scan - index
                    index = scan
                    if lineLength > lineLimit { violations.insert(.longLine) }
                    guard index < count else { break }
                    switch bytes[index] {
                    case 13:
                        if index + 1 < count {
                            if bytes[index + 1] == 10 {
                                // CRLF inside this input: it stays in the current run.
                                state = .lineStart
                                lineLength = 0
                                index += 2
                            } else {
                                violations.insert(.bareCR)
                                lineLength += 1
                                index += 1
                            }
                        } else {
                            // The last byte: held back as state until we know whether LF follows.
                            flush(upTo: index)
                            state = .cr
                            index += 1
                            runStart = index
                        }
                    case 10:
                        violations.insert(.bareLF)
                        lineLength += 1
                        index += 1
                    default:
                        violations.insert(.nul)
                        lineLength += 1
                        index += 1
                    }
                    if lineLength > lineLimit { violations.insert(.longLine) }
                case .cr:
                    if byte == 10 {
                        emit("\r\n")
                        state = .lineStart
                        lineLength = 0
                        index += 1
                        runStart = index
                    } else {
                        emit("\r")
                        violations.insert(.bareCR)
                        lineLength += 1
                        if lineLength > lineLimit { violations.insert(.longLine) }
                        state = .inLine
                        runStart = index
                    }
                case .dot:
                    if byte == 13 {
                        state = .dotCR
                        index += 1
                        runStart = index
                    } else {
                        // `..x` → `.x` (RFC 5321 §4.5.2): the first dot is dropped.
                        state = .inLine
                        runStart = index
                    }
                case .dotCR:
                    if byte == 10 {
                        state = .finished
                        return index + 1
                    }
                    // `"." CR x`: the dot is stuffing, the CR a bare CR of the line.
                    emit("\r")
                    violations.insert(.bareCR)
                    lineLength += 1
                    if lineLength > lineLimit { violations.insert(.longLine) }
                    state = .inLine
                    runStart = index
                case .finished:
                    return index
                }
            }
            flush(upTo: count)
            return count
        }
        let content: ByteBuffer
        if let output {
            content = output
        } else if let run = firstRun {
            content = input.getSlice(at: input.readerIndex + run.lowerBound, length: run.count)!
        } else {
            content = ByteBuffer()
        }
        input.moveReaderIndex(forwardBy: consumed)
        self.state = state
        self.lineLength = lineLength
        self.violations = violations
        contentByteCount += content.readableBytes
        return SMTPDataChunk(content: content, isEnd: state == .finished)
    }
}
