import Foundation
import Testing

/// Replays every `Transcripts/*.smtp` dialogue (format in Transcripts/README.md) against a
/// live server over a real socket.
@Suite(.serialized) struct TranscriptTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
        "Transcripts"
    ).path

    static var names: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".smtp") }.sorted()
    }

    @Test(arguments: names)
    func transcript(_ name: String) async throws {
        let text = try String(contentsOfFile: "\(Self.folder)/\(name)", encoding: .utf8)
        let server = try await TestServer.start()
        do {
            try await Transcript(text).play(against: server)
        } catch {
            Issue.record("\(name): \(error)\n--- server log ---\n\(server.log)")
        }
        await server.stop()
    }
}

struct Transcript {
    enum Step {
        case send([UInt8])
        case expect(String)
        case expectClose
        case maildir(String, Int)
    }

    var client: String?
    var steps: [Step] = []

    init(_ text: String) {
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if line.hasPrefix("#") || line.isEmpty { continue }
            if line.hasPrefix("@client ") {
                client = String(line.dropFirst(8))
            } else if line.hasPrefix(">raw ") {
                steps.append(.send(Self.unescape(String(line.dropFirst(5)))))
            } else if line.hasPrefix(">repeat ") {
                let rest = line.dropFirst(8)
                let space = rest.firstIndex(of: " ")!
                let count = Int(rest[..<space])!
                let unit = Self.unescape(String(rest[rest.index(after: space)...]))
                steps.append(.send(Array([[UInt8]](repeating: unit, count: count).joined())))
            } else if line == ">" || line.hasPrefix("> ") {
                steps.append(.send(Array(line.dropFirst(2).utf8) + [13, 10]))
            } else if line == "<close" {
                steps.append(.expectClose)
            } else if line.hasPrefix("< ") {
                steps.append(.expect(String(line.dropFirst(2))))
            } else if line.hasPrefix("=maildir ") {
                let parts = line.split(separator: " ")
                steps.append(.maildir(String(parts[1]), Int(parts[2])!))
            } else {
                fatalError("bad transcript line: \(line)")
            }
        }
    }

    /// `\r \n \0 \t \\ \xHH`.
    static func unescape(_ text: String) -> [UInt8] {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "\\"), let next = iterator.next() else {
                bytes.append(byte)
                continue
            }
            switch next {
            case UInt8(ascii: "r"): bytes.append(13)
            case UInt8(ascii: "n"): bytes.append(10)
            case UInt8(ascii: "0"): bytes.append(0)
            case UInt8(ascii: "t"): bytes.append(9)
            case UInt8(ascii: "x"):
                let hex = String(decoding: [iterator.next()!, iterator.next()!], as: UTF8.self)
                bytes.append(UInt8(hex, radix: 16)!)
            default: bytes.append(next)
            }
        }
        return bytes
    }

    func play(against server: TestServer) async throws {
        let connection = try SMTPTestClient(port: server.port, from: client)
        defer { connection.close() }
        var pending: [UInt8] = []
        var closed = false
        for step in steps {
            if case .send(let bytes) = step {
                pending += bytes
                continue
            }
            if !pending.isEmpty {
                // Consecutive sends go out as one write: a pipelined burst.
                try connection.send(pending)
                pending = []
            }
            switch step {
            case .send:
                break
            case .expect(let prefix):
                guard let reply = try connection.replyOrClose() else {
                    throw TestServerError("expected \"\(prefix)\", the server closed the connection")
                }
                guard reply.hasPrefix(prefix) else {
                    throw TestServerError("expected \"\(prefix)\", got \"\(reply)\"")
                }
            case .expectClose:
                guard try connection.isClosed() else {
                    throw TestServerError("the server did not close the connection")
                }
                closed = true
            case .maildir(let user, let count):
                try await server.waitForLocalDeliveries()
                let found = server.maildirCount(user)
                guard found == count else {
                    throw TestServerError("maildir \(user): \(found) messages, expected \(count)")
                }
            }
        }
        if !pending.isEmpty { try connection.send(pending) }
        if !closed {
            // Nothing more may come: an extra reply means the server answered something the
            // transcript never sent as a command (e.g. a smuggled second message).
            connection.close()
        }
    }
}
