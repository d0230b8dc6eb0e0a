import NIOCore

/// The header section of a message split into fields, and where the body starts, as filters
/// need it: milters get one event per field, spamd's HEADERS answer is read field by field.
///
/// A field is a line with a name and a colon and the continuation lines after it (lines that
/// start with a space or tab, RFC 5322 §2.2.3). The section ends at the empty line, or, as in
/// Postfix, at the first line that is not a field (which is then the body's first line). Line
/// ends may be CRLF or a bare LF.
struct MessageHeaderSection {
    struct Field: Hashable {
        /// The name, without white space before the colon.
        var name: [UInt8]
        /// Everything after the colon, continuation lines included, each line break as it
        /// was, the final line end excluded.
        var value: [UInt8]

        var nameText: String { String(decoding: name, as: UTF8.self) }
    }

    var fields: [Field] = []
    /// Offset of the body from the buffer's reader index: after the empty line, or at the
    /// first line that is not a field; the end when there is no body.
    var bodyOffset: Int

    init(_ message: ByteBuffer) {
        let bytes = message.readableBytesView
        let start = bytes.startIndex
        var position = start
        var current: Field?
        func lineEnd(from index: Int) -> (end: Int, next: Int) {
            guard let newline = bytes[index...].firstIndex(of: UInt8(ascii: "\n")) else {
                return (bytes.endIndex, bytes.endIndex)
            }
            let end = newline > index && bytes[newline - 1] == UInt8(ascii: "\r") ? newline - 1 : newline
            return (end, newline + 1)
        }
        while position < bytes.endIndex {
            let (end, next) = lineEnd(from: position)
            let line = bytes[position..<end]
            if line.isEmpty {
                position = next
                break
            }
            if line.first == UInt8(ascii: " ") || line.first == UInt8(ascii: "\t") {
                if current != nil {
                    current!.value.append(contentsOf: [13, 10])
                    current!.value.append(contentsOf: line)
                    position = next
                    continue
                }
                break  // A continuation without a field: not a header section any more.
            }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { break }
            var nameEnd = colon
            while nameEnd > line.startIndex, bytes[nameEnd - 1] == 32 || bytes[nameEnd - 1] == 9 { nameEnd -= 1 }
            let name = bytes[line.startIndex..<nameEnd]
            guard !name.isEmpty, name.allSatisfy({ (33...126).contains($0) }) else { break }
            if let current { fields.append(current) }
            current = Field(name: Array(name), value: Array(bytes[(colon + 1)..<end]))
            position = next
        }
        if let current { fields.append(current) }
        bodyOffset = position - start
    }
}
