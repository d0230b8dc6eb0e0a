/// One header field exactly as it appears in a message, folding and all (RFC 5322 §2.2), as
/// DKIM signs it: "simple" header canonicalisation (RFC 6376 §3.4.1) changes nothing.
public struct HeaderField: Sendable, Hashable {
    /// The field name as written, without whitespace before the colon (RFC 5322 §4.5.3).
    public var name: String
    /// The whole field: name, colon, value, continuation lines and the final CRLF.
    public var octets: [UInt8]
    /// The index in `octets` just after the colon, where the value begins.
    public var valueStart: Int

    public init(name: String, octets: [UInt8], valueStart: Int) {
        self.name = name
        self.octets = octets
        self.valueStart = valueStart
    }

    /// The value octets: everything after the colon, continuation lines and final CRLF included.
    public var value: ArraySlice<UInt8> { octets[valueStart...] }

    /// Field names compare case-insensitively (RFC 5322 §1.2.2); `name` is in any case.
    public func hasName(_ other: String) -> Bool {
        name.utf8.count == other.utf8.count && name.lowercased() == other.lowercased()
    }

    /// The fields of a header section (the octets before the empty line that ends it). A field
    /// runs from a line that starts with a name and a colon up to the next line that does not
    /// start with whitespace. Lines that are neither (no colon, or a continuation before the first
    /// field) are malformed and skipped: no `h=` list can name them.
    public static func split(headerSection: some Collection<UInt8>) -> [HeaderField] {
        let octets = Array(headerSection)
        var fields: [HeaderField] = []
        var lineStart = 0
        var fieldStart: Int?
        func finish(at end: Int) {
            guard let start = fieldStart else { return }
            fieldStart = nil
            let line = octets[start..<end]
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { return }
            var nameEnd = colon
            while nameEnd > start, octets[nameEnd - 1] == 0x20 || octets[nameEnd - 1] == 0x09 { nameEnd -= 1 }
            // RFC 5322 §3.6.8: field-name = 1*ftext, printable ASCII without the colon.
            let name = octets[start..<nameEnd]
            guard !name.isEmpty, name.allSatisfy({ $0 >= 33 && $0 <= 126 }) else { return }
            fields.append(
                HeaderField(
                    name: String(decoding: name, as: UTF8.self), octets: Array(line),
                    valueStart: colon + 1 - start))
        }
        while lineStart < octets.count {
            var lineEnd = lineStart
            while lineEnd < octets.count {
                if octets[lineEnd] == 0x0A && lineEnd > lineStart && octets[lineEnd - 1] == 0x0D { break }
                lineEnd += 1
            }
            lineEnd = min(lineEnd + 1, octets.count)  // past the LF
            let first = octets[lineStart]
            if first == 0x20 || first == 0x09 {
                // A continuation line belongs to the field above (RFC 5322 §2.2.3).
            } else {
                finish(at: lineStart)
                fieldStart = lineStart
            }
            lineStart = lineEnd
        }
        finish(at: octets.count)
        return fields
    }
}
