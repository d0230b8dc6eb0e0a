import MailMessage
import NIOCore
import Testing

extension Array: DKIMCanonicalOutput where Element == UInt8 {
    public mutating func write(_ octets: UnsafeRawBufferPointer) { append(contentsOf: octets) }
}

/// `\r\n` spelled out in fixtures would hide the whitespace that matters; these are literal.
private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

private func canonicalBody(
    _ body: [UInt8], _ algorithm: DKIMCanonicalization, limit: Int? = nil, splits: [Int] = []
) -> (octets: [UInt8], length: Int) {
    var canonicalizer = DKIMBodyCanonicalizer(algorithm, limit: limit)
    var output: [UInt8] = []
    var start = 0
    for split in splits + [body.count] {
        canonicalizer.append(ByteBuffer(bytes: body[start..<split]), to: &output)
        start = split
    }
    canonicalizer.finish(to: &output)
    return (output, canonicalizer.length)
}

@Suite struct DKIMTagListTests {
    @Test(arguments: [
        ("v=1; a=rsa-sha256", ["v": "1", "a": "rsa-sha256"]),
        ("v=1;a=rsa-sha256;", ["v": "1", "a": "rsa-sha256"]),
        ("v=1; a=x; ", ["v": "1", "a": "x"]),
        (" v = 1 ;\r\n\ta =\r\n x ", ["v": "1", "a": "x"]),
        ("p=", ["p": ""]),
        ("p=; k=rsa", ["p": "", "k": "rsa"]),
        ("b=abc\r\n def", ["b": "abc\r\n def"]),
        ("n=a note, with = and spaces", ["n": "a note, with = and spaces"]),
        ("A_1=x; a_1=y", ["A_1": "x", "a_1": "y"]),
        ("z=caf\u{E9}", ["z": "caf\u{E9}"]),
    ])
    func parses(text: String, expected: [String: String]) throws {
        let list = try DKIMTagList(parsing: bytes(text))
        #expect(Dictionary(uniqueKeysWithValues: list.tags.map { ($0.name, $0.value) }) == expected)
    }

    @Test(arguments: [
        "",
        "   ",
        ";",
        "v=1;;a=2",
        "v=1; v=1",
        "=1",
        "1v=1",
        "v-x=1",
        "v 1",
        "v",
        "v=1\u{0}",
        "v=\u{7F}",
        "a=b; c",
    ])
    func rejects(text: String) {
        #expect(throws: DKIMTagListError.self) { try DKIMTagList(parsing: bytes(text)) }
    }

    @Test func tagNamesAreCaseSensitive() throws {
        let list = try DKIMTagList(parsing: bytes("V=1"))
        #expect(list["V"] == "1")
        #expect(list["v"] == nil)
    }

    @Test func valueRangeCoversTheSurroundingWhitespace() throws {
        let text = "a=1; b = x y \r\n\tz ; c=2"
        let list = try DKIMTagList(parsing: bytes(text))
        let b = try #require(list.tags.first { $0.name == "b" })
        #expect(String(decoding: bytes(text)[b.valueRange], as: UTF8.self) == " x y \r\n\tz ")
        let last = try #require(list.tags.last)
        #expect(last.valueRange == text.utf8.count - 1..<text.utf8.count)
    }
}

@Suite struct HeaderFieldTests {
    @Test func splitsFoldedFieldsAndKeepsTheirOctets() {
        let header = bytes("A: X\r\nB : Y\t\r\n\tZ  \r\nSubject:\r\n x\r\n")
        let fields = HeaderField.split(headerSection: header)
        #expect(fields.map(\.name) == ["A", "B", "Subject"])
        #expect(
            fields.map { String(decoding: $0.octets, as: UTF8.self) } == [
                "A: X\r\n", "B : Y\t\r\n\tZ  \r\n", "Subject:\r\n x\r\n",
            ])
        #expect(String(decoding: fields[1].value, as: UTF8.self) == " Y\t\r\n\tZ  \r\n")
        #expect(fields[2].hasName("SUBJECT"))
        #expect(!fields[2].hasName("Subjec"))
    }

    @Test func skipsLinesThatAreNotFields() {
        let header = bytes(" orphan continuation\r\nno colon here\r\n\tmore: of it\r\nTo: b\r\n: empty name\r\n")
        #expect(HeaderField.split(headerSection: header).map(\.name) == ["To"])
    }

    @Test func bareLineFeedDoesNotEndALine() {
        let fields = HeaderField.split(headerSection: bytes("A: 1\nB: 2\r\n"))
        #expect(fields.map(\.name) == ["A"])
        #expect(fields[0].octets.count == 11)
    }
}

@Suite struct DKIMHeaderCanonicalizationTests {
    @Test(arguments: [
        ("From: Alice <a@example.test>\r\n", "from:Alice <a@example.test>\r\n"),
        ("SUBJECT :  a \t b  \r\n", "subject:a b\r\n"),
        ("Subject:\r\n\tfolded\r\n  twice \r\n", "subject:folded twice\r\n"),
        ("X-Empty:   \r\n", "x-empty:\r\n"),
        ("X-Empty:\r\n", "x-empty:\r\n"),
        ("To: a,\r\n b\r\n", "to:a, b\r\n"),
        ("X: caf\u{E9}\r\n", "x:caf\u{E9}\r\n"),
    ])
    func relaxed(field: String, expected: String) throws {
        let parsed = try #require(HeaderField.split(headerSection: bytes(field)).first)
        #expect(DKIMCanonicalization.relaxed.canonicalize(parsed) == bytes(expected))
        #expect(DKIMCanonicalization.simple.canonicalize(parsed) == bytes(field))
    }

    /// RFC 6376 §3.4.6, the example exactly.
    @Test func rfc6376Example() {
        let message = bytes("A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n")
        var collector = HeaderSectionCollector(limit: 1000)
        let body = collector.append(ByteBuffer(bytes: message))!
        let fields = HeaderField.split(headerSection: collector.headerSection)
        #expect(fields.flatMap { DKIMCanonicalization.relaxed.canonicalize($0) } == bytes("a:X\r\nb:Y Z\r\n"))
        #expect(
            fields.flatMap { DKIMCanonicalization.simple.canonicalize($0) } == bytes("A: X\r\nB : Y\t\r\n\tZ  \r\n"))
        let bodyOctets = Array(body.readableBytesView)
        #expect(canonicalBody(bodyOctets, .relaxed).octets == bytes(" C\r\nD E\r\n"))
        #expect(canonicalBody(bodyOctets, .simple).octets == bytes(" C \r\nD \t E\r\n"))
    }
}

@Suite struct DKIMBodyCanonicalizationTests {
    @Test(arguments: [
        // (body, simple, relaxed)
        ("", "\r\n", ""),
        ("\r\n", "\r\n", ""),
        ("\r\n\r\n\r\n", "\r\n", ""),
        ("abc", "abc\r\n", "abc\r\n"),
        ("abc\r\n", "abc\r\n", "abc\r\n"),
        ("abc\r\n\r\n\r\n", "abc\r\n", "abc\r\n"),
        ("\r\nabc", "\r\nabc\r\n", "\r\nabc\r\n"),
        ("a\r\n\r\n\r\nb\r\n", "a\r\n\r\n\r\nb\r\n", "a\r\n\r\n\r\nb\r\n"),
        ("a \t b  \r\n", "a \t b  \r\n", "a b\r\n"),
        ("  lead\r\n", "  lead\r\n", " lead\r\n"),
        ("a\r\n \t \r\n\r\n", "a\r\n \t \r\n", "a\r\n"),
        ("a\r\n \r\nb\r\n", "a\r\n \r\nb\r\n", "a\r\n\r\nb\r\n"),
        ("  \r\n", "  \r\n", ""),
        ("a  ", "a  \r\n", "a\r\n"),
        ("a\rb\r\n", "a\rb\r\n", "a\rb\r\n"),
        ("a\r", "a\r\r\n", "a\r\r\n"),
        ("a\nb", "a\nb\r\n", "a\nb\r\n"),
        ("a\r\r\n", "a\r\r\n", "a\r\r\n"),
        ("a \r\r\n", "a \r\r\n", "a \r\r\n"),
    ])
    func canonicalizes(body: String, simple: String, relaxed: String) {
        #expect(canonicalBody(bytes(body), .simple).octets == bytes(simple))
        #expect(canonicalBody(bytes(body), .relaxed).octets == bytes(relaxed))
        #expect(canonicalBody(bytes(body), .simple).length == simple.utf8.count)
        #expect(canonicalBody(bytes(body), .relaxed).length == relaxed.utf8.count)
    }

    static let sample = bytes("Hi  there,\t\r\n\r\n \r\nline\rwith CR \r\n\t\r\nend  \r\n\r\n \r\n\r\n")

    @Test(arguments: DKIMCanonicalization.allCases)
    func everySplitGivesTheSameOutput(algorithm: DKIMCanonicalization) {
        let whole = canonicalBody(Self.sample, algorithm)
        for split in 0...Self.sample.count {
            #expect(canonicalBody(Self.sample, algorithm, splits: [split]) == whole, "split at \(split)")
        }
        #expect(canonicalBody(Self.sample, algorithm, splits: Array(1..<Self.sample.count)) == whole)
    }

    @Test func limitTruncatesButKeepsCounting() {
        let body = bytes("abc\r\ndef\r\n")
        #expect(canonicalBody(body, .relaxed, limit: 5) == (bytes("abc\r\n"), 10))
        #expect(canonicalBody(body, .relaxed, limit: 0) == ([], 10))
        #expect(canonicalBody(body, .relaxed, limit: 100) == (body, 10))
        #expect(canonicalBody([], .simple, limit: 1) == (bytes("\r"), 2))
    }

    @Test func manyTrailingEmptyLinesCostNoMemory() {
        var canonicalizer = DKIMBodyCanonicalizer(.simple)
        var output: [UInt8] = []
        let empty = ByteBuffer(bytes: Array(repeating: bytes("\r\n"), count: 50_000).flatMap { $0 })
        for _ in 0..<20 { canonicalizer.append(empty, to: &output) }
        #expect(output.isEmpty)
        canonicalizer.append(bytes("x"), to: &output)
        #expect(output.count == 2_000_001)
        canonicalizer.finish(to: &output)
        #expect(output.suffix(3) == bytes("x\r\n")[...])
    }
}

@Suite struct HeaderSectionCollectorTests {
    static let message = bytes("A: 1\r\nB: 2\r\n continued\r\n\r\nbody\r\n\r\nmore\r\n")

    @Test func everySplitFindsTheSameHeaderAndBody() {
        for split in 0...Self.message.count {
            var collector = HeaderSectionCollector(limit: 1000)
            var body: [UInt8] = []
            for part in [Self.message[..<split], Self.message[split...]] {
                if let rest = collector.append(ByteBuffer(bytes: part)) { body += rest.readableBytesView }
            }
            #expect(collector.isComplete)
            #expect(collector.headerSection == bytes("A: 1\r\nB: 2\r\n continued\r\n"), "split at \(split)")
            #expect(body == bytes("body\r\n\r\nmore\r\n"), "split at \(split)")
        }
    }

    @Test func messageWithoutBody() {
        var collector = HeaderSectionCollector(limit: 1000)
        #expect(collector.append(ByteBuffer(string: "A: 1\r\nB: 2\r\n")) == nil)
        collector.finish()
        #expect(collector.isComplete && !collector.overflowed)
        #expect(collector.headerSection == bytes("A: 1\r\nB: 2\r\n"))
    }

    @Test func messageStartingWithTheEmptyLine() {
        var collector = HeaderSectionCollector(limit: 1000)
        let body = collector.append(ByteBuffer(string: "\r\nbody"))
        #expect(collector.headerSection.isEmpty)
        #expect(body.map { String(buffer: $0) } == "body")
    }

    @Test(arguments: [(12, false), (11, true)])
    func limit(limit: Int, overflows: Bool) {
        var collector = HeaderSectionCollector(limit: limit)
        let body = collector.append(ByteBuffer(string: "A: 1\r\nB: 2\r\n\r\nbody"))
        #expect(collector.overflowed == overflows)
        #expect(collector.headerSection.count <= limit + 2)
        #expect(body.map { String(buffer: $0) } == "body")
        var unfinished = HeaderSectionCollector(limit: limit)
        _ = unfinished.append(ByteBuffer(string: "A: 1\r\nB: 2\r\n"))
        unfinished.finish()
        #expect(unfinished.overflowed == overflows)
        #expect(unfinished.headerSection.count <= limit)
    }
}
