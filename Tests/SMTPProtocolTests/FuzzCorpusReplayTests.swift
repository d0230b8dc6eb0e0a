import Foundation
import NIOCore
import Testing

@testable import SMTPProtocol

/// Replays the fuzz seed corpus (and any crash input added to it) through the framer, the
/// command parser and the DATA decoder, checking chunking invariance as the fuzz target does.
@Suite struct FuzzCorpusReplayTests {
    static let corpus: [String] = {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("FuzzCorpus")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.sorted().map { directory.appendingPathComponent($0).path }
    }()

    @Test func corpusIsPresent() {
        #expect(Self.corpus.count >= 4)
    }

    @Test(arguments: corpus)
    func replays(_ path: String) throws {
        let data = try #require(FileManager.default.contents(atPath: path))
        let input = Array(data.dropFirst())
        let wholeFrames = frame([input], maxLineLength: 64)
        let wholeData = decode([input], maxLineLength: 80)
        for pieces in splits(of: input, randomCount: 5) {
            let frames = frame(pieces, maxLineLength: 64)
            #expect(frames.0 == wholeFrames.0)
            #expect(decode(pieces, maxLineLength: 80) == wholeData)
        }
        for case .line(let line) in wholeFrames.0 {
            _ = parseLine(line)
        }
    }
}
