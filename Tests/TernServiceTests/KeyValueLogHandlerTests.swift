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
}
