import NIOCore
import Testing

@testable import SMTPProtocol

struct DataFixture: Sendable, CustomTestStringConvertible {
    var input: String
    /// nil: no end of data in the input.
    var content: String
    var ended: Bool
    /// Bytes after the end, left in the input.
    var remainder: String = ""
    var violations: DataViolations = []
    var maxLineLength: Int = 1000
    var testDescription: String { input.debugDescription }
}

struct DecodeResult: Equatable {
    var content: [UInt8]
    var ended: Bool
    var remainder: [UInt8]
    var violations: DataViolations
    var contentByteCount: Int
}

func decode(_ pieces: [[UInt8]], maxLineLength: Int) -> DecodeResult {
    var decoder = SMTPDataDecoder(maxLineLength: maxLineLength)
    var content: [UInt8] = []
    var remainder: [UInt8] = []
    var ended = false
    for piece in pieces {
        if ended {
            remainder += piece
            continue
        }
        var buffer = ByteBuffer(bytes: piece)
        let chunk = decoder.decode(&buffer)
        content += chunk.content.bytes
        if chunk.isEnd { ended = true }
        remainder += buffer.bytes
    }
    return DecodeResult(
        content: content, ended: ended, remainder: remainder, violations: decoder.violations,
        contentByteCount: decoder.contentByteCount)
}

@Suite struct SMTPDataDecoderTests {
    static let fixtures: [DataFixture] = [
        .init(input: ".\r\n", content: "", ended: true),
        .init(input: ".\r\nQUIT\r\n", content: "", ended: true, remainder: "QUIT\r\n"),
        .init(input: "Hi\r\n.\r\n", content: "Hi\r\n", ended: true),
        .init(input: "Hi\r\n.\r\nQUIT\r\n", content: "Hi\r\n", ended: true, remainder: "QUIT\r\n"),
        .init(input: "a\r\nb\r\n\r\nc\r\n.\r\n", content: "a\r\nb\r\n\r\nc\r\n", ended: true),
        .init(input: "Hi\r\n", content: "Hi\r\n", ended: false),
        .init(input: "Hi", content: "Hi", ended: false),
        // Dot-unstuffing (RFC 5321 §4.5.2).
        .init(input: "..x\r\n.\r\n", content: ".x\r\n", ended: true),
        .init(input: "a\r\n..\r\n.\r\n", content: "a\r\n.\r\n", ended: true),
        .init(input: "a\r\n...\r\n.\r\n", content: "a\r\n..\r\n", ended: true),
        .init(input: "a\r\n.x\r\n.\r\n", content: "a\r\nx\r\n", ended: true),
        .init(input: "a.\r\nb. \r\n.\r\n", content: "a.\r\nb. \r\n", ended: true),
        .init(input: "a\r\n. \r\n.\r\n", content: "a\r\n \r\n", ended: true),
        // Smuggling variants: none of these ends data.
        .init(input: "a\n.\nb\r\n", content: "a\n.\nb\r\n", ended: false, violations: .bareLF),
        .init(input: "a\r.\rb\r\n", content: "a\r.\rb\r\n", ended: false, violations: .bareCR),
        .init(input: "a\n.\r\nb\r\n", content: "a\n.\r\nb\r\n", ended: false, violations: .bareLF),
        .init(input: "a\r\n.\nb\r\n", content: "a\r\n\nb\r\n", ended: false, violations: .bareLF),
        .init(input: "a\r\n.\rb\r\n", content: "a\r\n\rb\r\n", ended: false, violations: .bareCR),
        .init(input: "a\r.\r\nb\r\n", content: "a\r.\r\nb\r\n", ended: false, violations: .bareCR),
        .init(input: "a\r\n.\r\r\nb\r\n", content: "a\r\n\r\r\nb\r\n", ended: false, violations: .bareCR),
        .init(input: "a\r\n\n.\r\nb\r\n", content: "a\r\n\n.\r\nb\r\n", ended: false, violations: .bareLF),
        .init(input: "a\r\r\n.\r\n", content: "a\r\r\n", ended: true, violations: .bareCR),
        .init(input: "a\r\n.\0\r\nb\r\n", content: "a\r\n\0\r\nb\r\n", ended: false, violations: .nul),
        .init(input: "a\r\n\0.\r\nb\r\n", content: "a\r\n\0.\r\nb\r\n", ended: false, violations: .nul),
        .init(input: "a\r\n .\r\nb\r\n", content: "a\r\n .\r\nb\r\n", ended: false),
        .init(input: "a\r\n.\r \nb\r\n", content: "a\r\n\r \nb\r\n", ended: false, violations: [.bareCR, .bareLF]),
        .init(input: "\n.\n", content: "\n.\n", ended: false, violations: .bareLF),
        .init(input: "\r\n.\n", content: "\r\n\n", ended: false, violations: .bareLF),
        // The smuggled second message stays content and the real end comes later.
        .init(
            input: "a\n.\nMAIL FROM:<x@y>\r\n.\r\nNOOP\r\n", content: "a\n.\nMAIL FROM:<x@y>\r\n", ended: true,
            remainder: "NOOP\r\n", violations: .bareLF),
        // A trailing CR before the end marker is a bare CR of the last line.
        .init(input: "a\r\r\n.\r\n", content: "a\r\r\n", ended: true, violations: .bareCR),
        .init(input: "\0\r\n.\r\n", content: "\0\r\n", ended: true, violations: .nul),
        // Line length (limit 10 including CRLF: 8 octets of text; a stuffing dot counts).
        .init(input: "12345678\r\n.\r\n", content: "12345678\r\n", ended: true, maxLineLength: 10),
        .init(
            input: "123456789\r\n.\r\n", content: "123456789\r\n", ended: true, violations: .longLine, maxLineLength: 10
        ),
        .init(
            input: "..2345678\r\n.\r\n", content: ".2345678\r\n", ended: true, violations: .longLine, maxLineLength: 10),
        .init(input: ".2345678\r\n.\r\n", content: "2345678\r\n", ended: true, maxLineLength: 10),
        .init(
            input: "1234\n5678\r\n.\r\n", content: "1234\n5678\r\n", ended: true, violations: [.bareLF, .longLine],
            maxLineLength: 10),
        .init(input: "1234\r\n5678\r\n.\r\n", content: "1234\r\n5678\r\n", ended: true, maxLineLength: 10),
    ]

    @Test(arguments: fixtures)
    func decodesAtEverySplit(_ fixture: DataFixture) {
        let input = Array(fixture.input.utf8)
        let expected = DecodeResult(
            content: Array(fixture.content.utf8), ended: fixture.ended, remainder: Array(fixture.remainder.utf8),
            violations: fixture.violations, contentByteCount: fixture.content.utf8.count)
        for pieces in splits(of: input) {
            #expect(decode(pieces, maxLineLength: fixture.maxLineLength) == expected, "split \(pieces.map(\.count))")
        }
    }

    @Test func largeMessageDecodesExactly() {
        var message: [UInt8] = []
        for line in 0..<2_000 {
            message += Array("Line \(line) of a message with some text in it, ok.\r\n".utf8)
            if line % 100 == 0 { message += Array("..dot line\r\n".utf8) }
        }
        let expected = message
        let stuffed = SMTPDataEncoder.encode(ByteBuffer(bytes: message))
        for chunkSize in [1, 7, 4096, 65536, stuffed.readableBytes] {
            var pieces: [[UInt8]] = []
            let all = stuffed.bytes
            var start = 0
            while start < all.count {
                pieces.append(Array(all[start..<min(start + chunkSize, all.count)]))
                start += chunkSize
            }
            let result = decode(pieces, maxLineLength: 1000)
            #expect(result.ended)
            #expect(result.content == expected)
            #expect(result.violations == [])
        }
    }

    @Test func afterTheEndNothingIsConsumed() {
        var decoder = SMTPDataDecoder()
        var input = ByteBuffer(string: ".\r\nRSET\r\n")
        #expect(decoder.decode(&input).isEnd)
        #expect(decoder.isFinished)
        let again = decoder.decode(&input)
        #expect(again.isEnd && again.content.readableBytes == 0)
        #expect(input.bytes == Array("RSET\r\n".utf8))
    }
}

@Suite struct SMTPDataEncoderTests {
    static let fixtures: [(String, String)] = [
        ("", ".\r\n"),
        ("Hi\r\n", "Hi\r\n.\r\n"),
        ("Hi", "Hi\r\n.\r\n"),
        (".", "..\r\n.\r\n"),
        (".\r\n", "..\r\n.\r\n"),
        ("a\r\n.b\r\n..c\r\n", "a\r\n..b\r\n...c\r\n.\r\n"),
        ("a.\r\n", "a.\r\n.\r\n"),
        // Bare line ends are normalised, so no receiver sees an unstuffed line start.
        ("a\n.\nb", "a\r\n..\r\nb\r\n.\r\n"),
        ("a\r.\rb\r", "a\r\n..\r\nb\r\n.\r\n"),
        ("a\r\r\n.", "a\r\n\r\n..\r\n.\r\n"),
    ]

    @Test(arguments: fixtures)
    func stuffsAtEverySplit(_ fixture: (String, String)) {
        let input = Array(fixture.0.utf8)
        for pieces in splits(of: input) {
            var encoder = SMTPDataEncoder()
            var output = ByteBuffer()
            for piece in pieces { encoder.encode(ByteBuffer(bytes: piece), into: &output) }
            encoder.finish(into: &output)
            #expect(
                String(decoding: output.readableBytesView, as: UTF8.self) == fixture.1, "split \(pieces.map(\.count))")
        }
    }

    @Test func roundTripsThroughTheDecoder() {
        let content = Array("From: a\r\n\r\n.\r\n..\r\n.x\r\nend\r\n".utf8)
        var encoded = SMTPDataEncoder.encode(ByteBuffer(bytes: content))
        var decoder = SMTPDataDecoder()
        let chunk = decoder.decode(&encoded)
        #expect(chunk.isEnd)
        #expect(chunk.content.bytes == content)
        #expect(encoded.readableBytes == 0)
    }
}
