import NIOCore
import Testing

@testable import SMTPProtocol

/// What the framer yields, in a form fixtures can spell.
enum FrameOut: Hashable, CustomStringConvertible {
    case line(String)
    case tooLong

    init(_ frame: SMTPFrame) {
        switch frame {
        case .line(let buffer): self = .line(String(decoding: buffer.readableBytesView, as: UTF8.self))
        case .lineTooLong: self = .tooLong
        }
    }

    var description: String {
        switch self {
        case .line(let text): return "line(\(text.debugDescription))"
        case .tooLong: return "tooLong"
        }
    }
}

struct FramerFixture: Sendable, CustomTestStringConvertible {
    var input: String
    var maxLineLength: Int
    var frames: [FrameOut]
    /// Bytes left buffered after the last frame.
    var remaining: Int
    var testDescription: String { input.debugDescription }
}

/// Feeds `pieces` in order, draining lines after each; returns the frames and what stays.
func frame(_ pieces: [[UInt8]], maxLineLength: Int) -> ([FrameOut], Int) {
    var framer = SMTPLineFramer(maxLineLength: maxLineLength)
    var frames: [FrameOut] = []
    for piece in pieces {
        framer.append(ByteBuffer(bytes: piece))
        while let frame = framer.nextLine() { frames.append(FrameOut(frame)) }
    }
    return (frames, framer.bufferedByteCount)
}

@Suite struct SMTPLineFramerTests {
    static let fixtures: [FramerFixture] = [
        .init(input: "", maxLineLength: 10, frames: [], remaining: 0),
        .init(input: "EHLO x\r\n", maxLineLength: 100, frames: [.line("EHLO x")], remaining: 0),
        .init(input: "\r\n", maxLineLength: 100, frames: [.line("")], remaining: 0),
        .init(input: "A\r\nB\r\nC", maxLineLength: 100, frames: [.line("A"), .line("B")], remaining: 1),
        // Bare LF and bare CR are bytes of the line, never line ends.
        .init(input: "A\nB\r\n", maxLineLength: 100, frames: [.line("A\nB")], remaining: 0),
        .init(input: "A\rB\r\n", maxLineLength: 100, frames: [.line("A\rB")], remaining: 0),
        .init(input: "A\n\rB\r\n", maxLineLength: 100, frames: [.line("A\n\rB")], remaining: 0),
        .init(input: "A\r\r\n", maxLineLength: 100, frames: [.line("A\r")], remaining: 0),
        .init(input: "A\n", maxLineLength: 100, frames: [], remaining: 2),
        .init(input: "A\0B\r\n", maxLineLength: 100, frames: [.line("A\0B")], remaining: 0),
        // The limit includes CRLF: 8 octets + CRLF fit in 10, 9 do not.
        .init(input: "12345678\r\n", maxLineLength: 10, frames: [.line("12345678")], remaining: 0),
        .init(input: "123456789\r\nok\r\n", maxLineLength: 10, frames: [.tooLong, .line("ok")], remaining: 0),
        // A long line is reported once, when its CRLF arrives, in order with the others.
        .init(
            input: "a\r\n" + String(repeating: "x", count: 50) + "\r\nb\r\n", maxLineLength: 10,
            frames: [.line("a"), .tooLong, .line("b")], remaining: 0),
        .init(input: String(repeating: "x", count: 50) + "\r", maxLineLength: 10, frames: [], remaining: 1),
        .init(input: String(repeating: "x", count: 50), maxLineLength: 10, frames: [], remaining: 0),
        .init(input: String(repeating: "x\n", count: 50) + "\r\n", maxLineLength: 10, frames: [.tooLong], remaining: 0),
        .init(input: "\r\r\n\n\r\n", maxLineLength: 10, frames: [.line("\r"), .line("\n")], remaining: 0),
    ]

    @Test(arguments: fixtures)
    func framesAtEverySplit(_ fixture: FramerFixture) {
        let input = Array(fixture.input.utf8)
        for pieces in splits(of: input) {
            let (frames, remaining) = frame(pieces, maxLineLength: fixture.maxLineLength)
            #expect(frames == fixture.frames, "split \(pieces.map(\.count))")
            #expect(remaining == fixture.remaining, "split \(pieces.map(\.count))")
        }
    }

    @Test func memoryStaysBoundedForEndlessLine() {
        var framer = SMTPLineFramer(maxLineLength: 512)
        let chunk = ByteBuffer(repeating: UInt8(ascii: "x"), count: 4096)
        for _ in 0..<1000 {
            framer.append(chunk)
            #expect(framer.nextLine() == nil)
            #expect(framer.bufferedByteCount <= 512 + 1)
        }
        framer.append(ByteBuffer(string: "\r\nQUIT\r\n"))
        #expect(framer.nextLine() == .lineTooLong)
        #expect(framer.nextLine() == .line(ByteBuffer(string: "QUIT")))
        #expect(framer.nextLine() == nil)
    }

    @Test func partialLineUnderLimitIsKept() {
        var framer = SMTPLineFramer(maxLineLength: 10)
        framer.append(ByteBuffer(string: "12345678"))
        #expect(framer.nextLine() == nil)
        #expect(framer.bufferedByteCount == 8)
        framer.append(ByteBuffer(string: "\r"))
        #expect(framer.nextLine() == nil)
        framer.append(ByteBuffer(string: "\n"))
        #expect(framer.nextLine() == .line(ByteBuffer(string: "12345678")))
    }

    @Test func rawBytesForBinaryDataThenCommands() {
        var framer = SMTPLineFramer(maxLineLength: 100)
        framer.append(ByteBuffer(string: "BDAT 5 LAST\r\nab\r\ncQUIT\r\n"))
        #expect(framer.nextLine() == .line(ByteBuffer(string: "BDAT 5 LAST")))
        #expect(framer.readRawBytes(max: 3)?.bytes == Array("ab\r".utf8))
        #expect(framer.readRawBytes(max: 2)?.bytes == Array("\nc".utf8))
        #expect(framer.nextLine() == .line(ByteBuffer(string: "QUIT")))
        #expect(framer.readRawBytes(max: 10) == nil)
    }

    @Test func dataThenPipelinedCommands() {
        var framer = SMTPLineFramer(maxLineLength: 100)
        framer.append(ByteBuffer(string: "DATA\r\nHi\r\n..x\r\n.\r\nQUIT\r\n"))
        #expect(framer.nextLine() == .line(ByteBuffer(string: "DATA")))
        var decoder = SMTPDataDecoder()
        let chunk = framer.readData(&decoder)
        #expect(chunk?.isEnd == true)
        #expect(chunk?.content.bytes == Array("Hi\r\n.x\r\n".utf8))
        #expect(framer.nextLine() == .line(ByteBuffer(string: "QUIT")))
        #expect(framer.readData(&decoder) == nil)
    }

    @Test func dataSplitAcrossAppends() {
        var framer = SMTPLineFramer(maxLineLength: 100)
        var decoder = SMTPDataDecoder()
        var content: [UInt8] = []
        for piece in ["Hi\r", "\n.", "\r", "\nNOOP\r\n"] {
            framer.append(ByteBuffer(string: piece))
            if decoder.isFinished { continue }
            while let chunk = framer.readData(&decoder) {
                content += chunk.content.bytes
                if chunk.isEnd { break }
            }
        }
        #expect(decoder.isFinished)
        #expect(content == Array("Hi\r\n".utf8))
        #expect(framer.nextLine() == .line(ByteBuffer(string: "NOOP")))
    }

    @Test func startTLSDiscardsPipelinedPlaintext() {
        var framer = SMTPLineFramer(maxLineLength: 100)
        framer.append(ByteBuffer(string: "STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT"))
        #expect(framer.nextLine() == .line(ByteBuffer(string: "STARTTLS")))
        framer.discardBuffered()
        #expect(framer.bufferedByteCount == 0)
        #expect(framer.nextLine() == nil)
        framer.append(ByteBuffer(string: "EHLO x\r\n"))
        #expect(framer.nextLine() == .line(ByteBuffer(string: "EHLO x")))
    }

    @Test func discardAlsoEndsLongLineSkipping() {
        var framer = SMTPLineFramer(maxLineLength: 10)
        framer.append(ByteBuffer(string: String(repeating: "x", count: 40)))
        #expect(framer.nextLine() == nil)
        framer.discardBuffered()
        framer.append(ByteBuffer(string: "EHLO\r\n"))
        #expect(framer.nextLine() == .line(ByteBuffer(string: "EHLO")))
    }

    @Test func limitCanChange() {
        var framer = SMTPLineFramer(maxLineLength: 10)
        framer.maxLineLength = 100
        framer.append(ByteBuffer(string: String(repeating: "x", count: 40) + "\r\n"))
        #expect(framer.nextLine() == .line(ByteBuffer(string: String(repeating: "x", count: 40))))
    }
}
