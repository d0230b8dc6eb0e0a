import Foundation
import NIOCore

/// The header section at the start of a message (RFC 5322 §2.2): its fields in order, each with
/// the octets it occupies, so that the server can read them and write the section anew
/// (add fields at the top, drop forged ones, prefix the subject) without touching the body.
public struct HeaderSection: Sendable {
    public struct Field: Sendable {
        /// The name as written.
        public var name: String
        /// The whole field: name, colon, value and every folded line, with its final CRLF.
        public var raw: ByteBuffer
        /// The value with the folding CRLFs removed and leading/trailing white space trimmed.
        public var unfoldedValue: String {
            let text = String(decoding: raw.readableBytesView, as: UTF8.self)
            guard let colon = text.firstIndex(of: ":") else { return "" }
            let value = text[text.index(after: colon)...].replacingOccurrences(of: "\r\n", with: "")
            return value.trimmingCharacters(in: .whitespaces)
        }

        public func hasName(_ other: String) -> Bool {
            name.lowercased() == other.lowercased()
        }
    }

    public var fields: [Field]
    /// Octets from the start of the message to the start of the body (the empty line
    /// included); the whole message when it has no body.
    public var length: Int

    /// Splits the header section at the start of `message`. A section that does not end inside
    /// `message` (a prefix of a larger message) is nil: nothing can be rewritten safely then.
    public init?(parsing message: ByteBuffer, isWholeMessage: Bool) {
        var fields: [Field] = []
        let bytes = message.readableBytesView
        var index = bytes.startIndex
        var fieldStart: Int?
        var end: Int?
        func lineEnd(from start: Int) -> Int? {
            var position = start
            while position < bytes.endIndex {
                if bytes[position] == UInt8(ascii: "\n") { return position + 1 }
                position += 1
            }
            return nil
        }
        func closeField(at position: Int) {
            guard let start = fieldStart else { return }
            let slice = message.getSlice(at: message.readerIndex + start - bytes.startIndex, length: position - start)!
            let nameEnd = slice.readableBytesView.firstIndex(of: UInt8(ascii: ":")) ?? slice.readableBytesView.endIndex
            let name = String(
                decoding: slice.readableBytesView[slice.readableBytesView.startIndex..<nameEnd], as: UTF8.self)
            fields.append(Field(name: name.trimmingCharacters(in: .whitespaces), raw: slice))
            fieldStart = nil
        }
        while index < bytes.endIndex {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\r") || byte == UInt8(ascii: "\n") {
                // The empty line: the body begins after it (RFC 5322 §2.1).
                closeField(at: index)
                guard let next = lineEnd(from: index) else { break }
                end = next
                break
            }
            if byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") {
                // A folded continuation belongs to the field before it.
                if fieldStart == nil { fieldStart = index }
            } else {
                closeField(at: index)
                fieldStart = index
            }
            guard let next = lineEnd(from: index) else {
                index = bytes.endIndex
                break
            }
            index = next
        }
        if end == nil {
            guard isWholeMessage else { return nil }
            closeField(at: bytes.endIndex)
            end = bytes.endIndex
        }
        self.fields = fields
        self.length = end! - bytes.startIndex
    }

    /// The fields as `(name, unfolded value)` pairs, for rules and filters.
    public var namesAndValues: [(name: String, value: String)] {
        fields.map { ($0.name, $0.unfoldedValue) }
    }

    /// The section written anew: `added` fields first (each a complete `Name: value` without
    /// CRLF), then the fields that `keep` accepts, with `Subject:` prefixed, then what ended
    /// the section (the empty line).
    public func rewritten(
        adding added: [String], subjectPrefix: String? = nil, keeping keep: (Field) -> Bool = { _ in true },
        from message: ByteBuffer
    ) -> ByteBuffer {
        var out = ByteBuffer()
        out.reserveCapacity(length + added.reduce(0) { $0 + $1.utf8.count + 2 })
        for field in added {
            out.writeString(field)
            out.writeString("\r\n")
        }
        var consumed = 0
        var prefixed = false
        for field in fields {
            consumed += field.raw.readableBytes
            guard keep(field) else { continue }
            if let subjectPrefix, !prefixed, field.hasName("Subject") {
                prefixed = true
                var raw = field.raw
                let nameLength =
                    raw.readableBytesView.firstIndex(of: UInt8(ascii: ":"))! - raw.readableBytesView.startIndex + 1
                var name = raw.readSlice(length: nameLength)!
                out.writeBuffer(&name)
                // Keep the one space after the colon that almost every writer puts there.
                if raw.readableBytesView.first == UInt8(ascii: " ") {
                    raw.moveReaderIndex(forwardBy: 1)
                    out.writeString(" ")
                }
                out.writeString(subjectPrefix)
                out.writeBuffer(&raw)
                continue
            }
            var raw = field.raw
            out.writeBuffer(&raw)
        }
        if let subjectPrefix, !prefixed {
            out.writeString("Subject: \(subjectPrefix.trimmingCharacters(in: .whitespaces))\r\n")
        }
        // The empty line (or nothing, for a message without a body).
        if length > consumed, var rest = message.getSlice(at: message.readerIndex + consumed, length: length - consumed)
        {
            out.writeBuffer(&rest)
        }
        return out
    }
}
