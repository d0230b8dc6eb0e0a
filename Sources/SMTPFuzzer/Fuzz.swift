import FuzzSupport
import NIOCore
import SMTPProtocol

// libFuzzer target for the SMTP codec (see shared/FUZZING.md for how to build and run it).
//
// The first input byte picks a split size, so that chunk boundaries fall everywhere; the rest
// is fed to the line framer (each line parsed as a command) and to the DATA decoder, and the
// codec's invariants are checked.
#if canImport(Glibc)
    import Glibc
#endif

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data, size > 0 else { return 0 }
    let all = UnsafeBufferPointer(start: data, count: size)
    let chunkSize = Int(all[0] % 17) + 1
    let input = Array(all.dropFirst())
    checkFramer(input, chunkSize: chunkSize)
    checkDataDecoder(input, chunkSize: chunkSize)
    checkEncoderRoundTrip(input)
    checkReplyParser(input, chunkSize: chunkSize)
    return 0
}

/// The client's reply parser: whatever a server sends, the replies (or the error) do not
/// depend on how the bytes were split.
private func checkReplyParser(_ input: [UInt8], chunkSize: Int) {
    func parse(_ pieces: [ByteBuffer]) -> [String] {
        var parser = SMTPReplyParser(maxLineLength: 64)
        var out: [String] = []
        for piece in pieces {
            parser.append(piece)
            do throws(SMTPReplyError) {
                while let reply = try parser.nextReply() {
                    precondition(!reply.lines.isEmpty && (200..<600).contains(reply.code), "impossible reply")
                    out.append("\(reply.code) \(reply.enhanced.map { "\($0)" } ?? "-") \(reply.lines)")
                }
            } catch {
                out.append("error \(error)")
                return out
            }
        }
        return out
    }
    let whole = parse([ByteBuffer(bytes: input)])
    let split = parse(chunks(input, size: chunkSize))
    // An over-long line may be noticed before its end arrives: only the replies before it count.
    if whole.last?.hasPrefix("error") != true && split.last?.hasPrefix("error") != true {
        precondition(whole == split, "reply parsing depends on chunking")
    }
}

private func chunks(_ input: [UInt8], size: Int) -> [ByteBuffer] {
    stride(from: 0, to: input.count, by: size).map { ByteBuffer(bytes: input[$0..<min($0 + size, input.count)]) }
}

private func checkFramer(_ input: [UInt8], chunkSize: Int) {
    let maxLineLength = 64
    var framer = SMTPLineFramer(maxLineLength: maxLineLength)
    var lines: [SMTPFrame] = []
    for chunk in chunks(input, size: chunkSize) {
        framer.append(chunk)
        while let frame = framer.nextLine() {
            if case .line(let line) = frame {
                precondition(line.readableBytes + 2 <= maxLineLength, "line over the limit")
                precondition(!line.readableBytesView.containsCRLF, "CRLF inside a line")
                if let command = try? SMTPCommand.parse(line) { _ = command }
            }
            lines.append(frame)
        }
        precondition(framer.bufferedByteCount <= maxLineLength + 1, "framer holds too much")
    }
    // Chunking invariance: one append gives the same frames.
    var whole = SMTPLineFramer(maxLineLength: maxLineLength)
    whole.append(ByteBuffer(bytes: input))
    var wholeLines: [SMTPFrame] = []
    while let frame = whole.nextLine() { wholeLines.append(frame) }
    precondition(lines == wholeLines, "framer output depends on chunking")
}

private func checkDataDecoder(_ input: [UInt8], chunkSize: Int) {
    var decoder = SMTPDataDecoder(maxLineLength: 80)
    var content: [UInt8] = []
    var remainder: [UInt8] = []
    var ended = false
    for chunk in chunks(input, size: chunkSize) {
        var buffer = chunk
        if ended {
            remainder += buffer.readableBytesView
            continue
        }
        let before = buffer.readableBytes
        let decoded = decoder.decode(&buffer)
        content += decoded.content.readableBytesView
        if decoded.isEnd {
            ended = true
            remainder += buffer.readableBytesView
        } else {
            precondition(buffer.readableBytes == 0, "decoder left bytes without an end")
        }
        precondition(decoded.content.readableBytes <= before + 2, "decoder produced too much")
    }
    precondition(decoder.contentByteCount == content.count, "content count mismatch")
    var whole = SMTPDataDecoder(maxLineLength: 80)
    var buffer = ByteBuffer(bytes: input)
    let decoded = whole.decode(&buffer)
    precondition(Array(decoded.content.readableBytesView) == content, "decoder output depends on chunking")
    precondition(decoded.isEnd == ended, "end depends on chunking")
    precondition(Array(buffer.readableBytesView) == remainder, "remainder depends on chunking")
    precondition(whole.violations == decoder.violations, "violations depend on chunking")
    if ended {
        precondition(content.isEmpty || content.suffix(2) == [13, 10], "content does not end with CRLF")
    }
}

private func checkEncoderRoundTrip(_ input: [UInt8]) {
    // Whatever the content, encoding then decoding ends exactly at the encoder's end marker.
    var encoded = SMTPDataEncoder.encode(ByteBuffer(bytes: input))
    var decoder = SMTPDataDecoder(maxLineLength: Int.max / 2)
    let decoded = decoder.decode(&encoded)
    precondition(decoded.isEnd && encoded.readableBytes == 0, "encoded data does not end at its marker")
    precondition(decoder.violations.subtracting(.nul).isEmpty, "encoder output has bare line ends")
}

extension ByteBufferView {
    fileprivate var containsCRLF: Bool {
        var previous: UInt8 = 0
        for byte in self {
            if previous == 13 && byte == 10 { return true }
            previous = byte
        }
        return false
    }
}

#if FUZZING
    // libFuzzer's driver is the program's entry point (the fuzz build passes -DFUZZING).
    @_cdecl("SMTPFuzzer_main")
    public func fuzzerMain(
        _ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
    ) -> Int32 {
        var argc = argc
        var argv = argv
        return LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput)
    }
#else
    /// Without libFuzzer: replays the files named on the command line (a corpus or a crash input).
    @main
    struct SMTPFuzzerReplay {
        static func main() {
            FuzzReplay.run(CommandLine.arguments.dropFirst(), fuzzOneInput)
        }
    }
#endif
