import NIOCore

/// RFC 3463 enhanced mail system status code: `class.subject.detail`, e.g. 5.7.1.
public struct EnhancedStatusCode: Sendable, Hashable, CustomStringConvertible {
    public var statusClass: Int
    public var subject: Int
    public var detail: Int

    public init(_ statusClass: Int, _ subject: Int, _ detail: Int) {
        self.statusClass = statusClass
        self.subject = subject
        self.detail = detail
    }

    public var description: String { "\(statusClass).\(subject).\(detail)" }
}

/// One SMTP reply (RFC 5321 §4.2): a three-digit code, an optional enhanced status code and one
/// or more lines of text. Encoded as `code-text` continuation lines and a final `code text`.
public struct SMTPReply: Sendable, Hashable, CustomStringConvertible {
    public var code: Int
    public var enhanced: EnhancedStatusCode?
    public var lines: [String]

    public init(_ code: Int, _ enhanced: EnhancedStatusCode?, _ text: String) {
        self.code = code
        self.enhanced = enhanced
        self.lines = [text]
    }

    public init(_ code: Int, _ enhanced: EnhancedStatusCode?, lines: [String]) {
        precondition(!lines.isEmpty, "a reply has at least one line")
        self.code = code
        self.enhanced = enhanced
        self.lines = lines
    }

    public var isPositive: Bool { code < 400 }
    public var isTransientFailure: Bool { (400..<500).contains(code) }
    public var isPermanentFailure: Bool { code >= 500 }

    /// The first line as a client would log it, e.g. `550 5.7.1 Relaying denied`.
    public var description: String { lineText(0, last: true) }

    /// `code[-| ][enhanced ]text` for line `index`.
    public func lineText(_ index: Int, last: Bool) -> String {
        var text = "\(code)\(last ? " " : "-")"
        if let enhanced { text += "\(enhanced) " }
        text += lines[index]
        return text
    }

    /// Writes the reply with CRLF line ends. Reply text never contains CR or LF: they are
    /// replaced by spaces so that no caller can inject a reply line.
    public func write(to buffer: inout ByteBuffer) {
        for index in lines.indices {
            let text = lineText(index, last: index == lines.count - 1)
            for byte in text.utf8 {
                buffer.writeInteger(byte == 13 || byte == 10 ? 32 : byte)
            }
            buffer.writeStaticString("\r\n")
        }
    }
}
