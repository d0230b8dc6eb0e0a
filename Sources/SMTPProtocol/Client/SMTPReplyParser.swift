import NIOCore

/// Why a server's reply cannot be read (RFC 5321 §4.2). A client treats every one of these as a
/// protocol failure of that server: a temporary failure for the message, the connection
/// closed.
public enum SMTPReplyError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A line that does not start with three digits (2–5, 0–5, 0–9) and then SP, `-` or its end.
    case malformedLine(String)
    /// A continuation line with another code than the reply's first line.
    case codeChanged(expected: Int, got: Int)
    /// More lines in one reply than `SMTPReplyParser.maximumLines`.
    case tooManyLines
    /// A line longer than the parser accepts.
    case lineTooLong

    public var description: String {
        switch self {
        case .malformedLine(let line): "malformed reply line: \(line)"
        case .codeChanged(let expected, let got): "reply code changed from \(expected) to \(got) inside one reply"
        case .tooManyLines: "reply with too many lines"
        case .lineTooLong: "reply line too long"
        }
    }
}

/// Reads replies as a client receives them: `code-text` continuation lines, then `code text`
/// (or a bare `code`) on the last (RFC 5321 §4.2.1). The enhanced status code (RFC 2034) is
/// taken from the first line when it has one whose class matches the reply code; it is removed
/// from the text of every line that carries it.
///
/// One reply may span any number of reads, and several replies may arrive in one (a pipelining
/// server answers a group at once). Unlike the server's framer, this one also ends a line at a
/// bare LF: a reply cannot smuggle anything, and being lenient with broken servers is what
/// delivers the mail (Postfix's client is too).
public struct SMTPReplyParser: Sendable {
    /// RFC 5321 §4.5.3.1.5 allows 512 octets per reply line; real servers send more, and a
    /// 250-line EHLO reply is not unusual. Beyond these bounds a server is broken or hostile.
    public static let maximumLines = 1000

    private let maxLineLength: Int
    private var buffer = ByteBuffer()
    private var code: Int?
    private var lines: [String] = []
    private var enhanced: EnhancedStatusCode?

    public init(maxLineLength: Int = 4096) {
        self.maxLineLength = maxLineLength
    }

    /// Nothing is buffered: no reply, and no part of one.
    public var isEmpty: Bool { buffer.readableBytes == 0 && code == nil }

    public mutating func append(_ bytes: ByteBuffer) {
        var bytes = bytes
        buffer.writeBuffer(&bytes)
    }

    /// The next line without its CRLF (or LF); nil until one is complete.
    private mutating func nextLine() throws(SMTPReplyError) -> String? {
        guard let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else {
            if buffer.readableBytes > maxLineLength { throw .lineTooLong }
            return nil
        }
        var length = newline - buffer.readerIndex
        guard length + 1 <= maxLineLength else { throw .lineTooLong }
        let line = buffer.readSlice(length: length + 1)!
        if length > 0, line.getInteger(at: line.readerIndex + length - 1, as: UInt8.self) == 13 { length -= 1 }
        if buffer.readerIndex > 16 << 10 { buffer.discardReadBytes() }
        return line.getString(at: line.readerIndex, length: length)
    }

    /// The next complete reply, nil until one is complete. After an error the connection is
    /// unusable: the parser's state is undefined.
    public mutating func nextReply() throws(SMTPReplyError) -> SMTPReply? {
        while let line = try nextLine() {
            guard let parsed = Self.parse(line) else { throw .malformedLine(String(line.prefix(80))) }
            if let code, parsed.code != code { throw .codeChanged(expected: code, got: parsed.code) }
            var text = parsed.text
            if code == nil {
                code = parsed.code
                enhanced = Self.enhancedCode(in: text, replyCode: parsed.code)
            }
            if let enhanced, Self.enhancedCode(in: text, replyCode: parsed.code) == enhanced {
                text = String(text.drop { $0 != " " }.drop { $0 == " " })
            }
            lines.append(text)
            guard lines.count <= Self.maximumLines else { throw .tooManyLines }
            if parsed.last {
                defer {
                    code = nil
                    lines = []
                    enhanced = nil
                }
                return SMTPReply(parsed.code, enhanced, lines: lines)
            }
        }
        return nil
    }

    /// `250-text`, `250 text`, `250`.
    static func parse(_ line: String) -> (code: Int, last: Bool, text: String)? {
        let bytes = Array(line.utf8)
        guard bytes.count >= 3,
            (UInt8(ascii: "2")...UInt8(ascii: "5")).contains(bytes[0]),
            (UInt8(ascii: "0")...UInt8(ascii: "5")).contains(bytes[1]),
            (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[2])
        else { return nil }
        let code = Int(bytes[0] - 48) * 100 + Int(bytes[1] - 48) * 10 + Int(bytes[2] - 48)
        if bytes.count == 3 { return (code, true, "") }
        switch bytes[3] {
        case UInt8(ascii: " "): return (code, true, String(decoding: bytes[4...], as: UTF8.self))
        case UInt8(ascii: "-"): return (code, false, String(decoding: bytes[4...], as: UTF8.self))
        default: return nil
        }
    }

    /// `x.y.z` at the start of `text` whose class is the reply code's first digit (RFC 3463 §2:
    /// class 2, 4 or 5; subject and detail up to three digits).
    static func enhancedCode(in text: String, replyCode: Int) -> EnhancedStatusCode? {
        let token = text.prefix { $0 != " " }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3,
            let statusClass = Int(parts[0]), statusClass == replyCode / 100, [2, 4, 5].contains(statusClass),
            parts[1].count <= 3, parts[2].count <= 3,
            parts[1].allSatisfy(\.isASCII), parts[2].allSatisfy(\.isASCII),
            let subject = Int(parts[1]), let detail = Int(parts[2]), subject >= 0, detail >= 0
        else { return nil }
        return EnhancedStatusCode(statusClass, subject, detail)
    }
}

/// What a server offers in its EHLO reply (RFC 5321 §4.1.1.1), as a client needs it.
public struct SMTPServerCapabilities: Sendable, Hashable {
    /// Every keyword, upper case, with its parameters as sent.
    public var keywords: [String: [String]]

    /// From a positive EHLO reply: the first line is the greeting, every further line one
    /// keyword with its parameters.
    public init(ehloReply reply: SMTPReply) {
        var keywords: [String: [String]] = [:]
        for line in reply.lines.dropFirst() {
            let words = line.split(separator: " ").map(String.init)
            guard let keyword = words.first?.uppercased(), !keyword.isEmpty else { continue }
            keywords[keyword] = Array(words.dropFirst())
        }
        self.keywords = keywords
    }

    /// After HELO (no extensions), or for tests.
    public init(keywords: [String: [String]] = [:]) {
        self.keywords = keywords
    }

    public func offers(_ keyword: String) -> Bool { keywords[keyword.uppercased()] != nil }

    public var pipelining: Bool { offers("PIPELINING") }
    public var eightBitMIME: Bool { offers("8BITMIME") }
    public var smtpUTF8: Bool { offers("SMTPUTF8") }
    public var startTLS: Bool { offers("STARTTLS") }
    public var dsn: Bool { offers("DSN") }
    public var chunking: Bool { offers("CHUNKING") }
    public var enhancedStatusCodes: Bool { offers("ENHANCEDSTATUSCODES") }
    public var requireTLS: Bool { offers("REQUIRETLS") }

    /// RFC 1870: the largest message the server accepts; nil when it announced no size or
    /// `SIZE 0` (no fixed limit), or did not offer SIZE at all.
    public var maximumSize: Int? {
        guard let value = keywords["SIZE"]?.first, let size = Int(value), size > 0 else { return nil }
        return size
    }

    /// SASL mechanisms after `AUTH` (RFC 4954), upper case.
    public var authMechanisms: Set<String> {
        Set((keywords["AUTH"] ?? []).map { $0.uppercased() })
    }
}
