import Foundation
import NIOCore
import Testing

@testable import MailDelivery

@Suite struct MaildirTests {
    func temporaryDirectory() -> String {
        let path = NSTemporaryDirectory() + "tern-maildir-\(UUID().uuidString)"
        return path
    }

    @Test func deliversIntoNewWithPrefixAndCreatesTheTree() throws {
        let root = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let maildir = Maildir(path: "\(root)/mail/example.test/alice")
        var chunks = [ByteBuffer(string: "Subject: hi\r\n\r\n"), ByteBuffer(string: "body\r\n")]
        let name = try maildir.deliver(prefix: "Return-Path: <a@b>\r\n", hostname: "mx.example.test") {
            chunks.isEmpty ? nil : chunks.removeFirst()
        }
        let content = try String(contentsOfFile: "\(root)/mail/example.test/alice/new/\(name)", encoding: .utf8)
        #expect(content == "Return-Path: <a@b>\r\nSubject: hi\r\n\r\nbody\r\n")
        for sub in ["tmp", "cur"] {
            #expect(FileManager.default.fileExists(atPath: "\(root)/mail/example.test/alice/\(sub)"))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(root)/mail/example.test/alice/tmp").isEmpty)
        #expect(name.hasSuffix(".mx.example.test"))
    }

    @Test func namesAreUnique() throws {
        let names = (0..<1000).map { _ in Maildir.uniqueName(hostname: "h") }
        #expect(Set(names).count == names.count)
        #expect(!Maildir.uniqueName(hostname: "a/b:c").dropFirst(5).contains("/"))
    }

    @Test func aFailingSourceLeavesNothingBehind() throws {
        struct Broken: Error {}
        let root = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let maildir = Maildir(path: root)
        #expect(throws: MaildirError.self) {
            _ = try maildir.deliver(prefix: "", hostname: "h") { throw Broken() }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(root)/tmp").isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(root)/new").isEmpty)
    }
}

@Suite struct DeliveryLogFormatTests {
    @Test(arguments: [
        (0.0, "0.000"), (0.0004, "0.000"), (0.0426, "0.043"), (1.5, "1.500"), (12.3456, "12.346"), (-1.0, "0.000"),
    ])
    func secondsWithMilliseconds(interval: Double, expected: String) {
        #expect(DeliveryScheduler.seconds(interval) == expected)
    }
}
