import Glibc
import Logging
import Testing

@testable import TernService

@Suite struct KeyValueLogHandlerTests {
    func rendered(_ value: String) -> String {
        var line = ""
        KeyValueLogHandler.append("k", value, to: &line)
        return line
    }

    @Test(arguments: [
        ("plain", " k=plain"),
        ("<a@b.test>", " k=<a@b.test>"),
        ("two words", " k=\"two words\""),
        ("a=b", " k=\"a=b\""),
        ("", " k=\"\""),
        ("say \"hi\"", " k=\"say \\\"hi\\\"\""),
        ("line\r\nforged=1", " k=\"line\\r\\nforged=1\""),
        ("back\\slash", " k=\"back\\\\slash\""),
        ("nul\u{0}", " k=\"nul\\x0\""),
        ("grüße", " k=grüße"),
    ])
    func valuesAreQuotedAndEscapedWhenNeeded(value: String, expected: String) {
        #expect(rendered(value) == expected)
    }

    @Test func timestampIsISO8601WithMilliseconds() {
        let stamp = KeyValueLogHandler.timestamp()
        #expect(stamp.utf8.count == 24)
        #expect(stamp.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/) != nil)
    }

    /// A whole line: the fixed keys first, then the rest sorted, the event's metadata winning
    /// over the logger's, everything in one write.
    @Test func lineLayout() throws {
        var fds: [Int32] = [0, 0]
        try #require(pipe(&fds) == 0)
        defer {
            close(fds[0])
            close(fds[1])
        }
        var handler = KeyValueLogHandler(label: "tern", descriptor: fds[1])
        handler.metadata = ["component": "smtpd", "client": "192.0.2.1", "queue_id": "Q1", "size": "1"]
        var logger = Logger(label: "tern") { _ in handler }
        logger[metadataKey: "helo"] = "mx.example"
        logger.info(
            "queued", metadata: ["event": "queued", "size": "5414", "from": "<a b@c>", "n": .stringConvertible(3)])
        logger.debug("not at info")
        logger.warning("bare")
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = read(fds[0], &buffer, buffer.count)
        let lines = String(decoding: buffer[0..<max(0, count)], as: UTF8.self).split(separator: "\n")
        try #require(lines.count == 2)
        let first = lines[0].split(separator: " ", maxSplits: 1)
        #expect(first[0].wholeMatch(of: /time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/) != nil)
        #expect(
            first[1]
                == "level=info component=smtpd event=queued queue_id=Q1 msg=queued client=192.0.2.1 "
                + "from=\"<a b@c>\" helo=mx.example n=3 size=5414")
        #expect(
            lines[1].hasSuffix(
                " level=warning component=smtpd queue_id=Q1 msg=bare client=192.0.2.1 helo=mx.example size=1"))
    }
}
