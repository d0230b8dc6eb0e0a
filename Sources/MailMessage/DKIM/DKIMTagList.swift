/// A DKIM tag list (RFC 6376 §3.2): the text of a `DKIM-Signature:` field value and of a key
/// record in the DNS.
///
///     tag-list  =  tag-spec *( ";" tag-spec ) [ ";" ]
///     tag-spec  =  [FWS] tag-name [FWS] "=" [FWS] tag-value [FWS]
///     tag-name  =  ALPHA *ALNUMPUNC
///     tag-value =  [ tval *( 1*(WSP / FWS) tval ) ]
///     tval      =  1*VALCHAR
///     VALCHAR   =  %x21-3A / %x3C-7E
public struct DKIMTagList: Sendable, Hashable {
    /// One `name=value` pair.
    public struct Tag: Sendable, Hashable {
        /// Tag names are case-sensitive (§3.2).
        public var name: String
        /// The value without the whitespace around it; whitespace inside is kept as written.
        public var value: String
        /// Where the value lies in the parsed octets, counted from 0: from just after the `=` up
        /// to the `;` or the end, surrounding whitespace included — what §3.5 deletes from `b=`.
        public var valueRange: Range<Int>
    }

    /// The tags in the order written.
    public private(set) var tags: [Tag]

    /// Parses a tag list. Octets above 0x7F are accepted in values (RFC 8616 §4 allows UTF-8);
    /// control characters other than whitespace, an empty tag-spec between two semicolons, a
    /// malformed name and a repeated name are errors (§3.2: "the entire tag-list is invalid").
    public init(parsing text: some Collection<UInt8>) throws(DKIMTagListError) {
        let octets = Array(text)
        var tags: [Tag] = []
        var seen: Set<String> = []
        var start = 0
        while start <= octets.count {
            let end = octets[start...].firstIndex(of: UInt8(ascii: ";")) ?? octets.count
            let isLast = end == octets.count
            let spec = try Self.parseSpec(octets, start..<end, isLast: isLast)
            if let spec {
                guard seen.insert(spec.name).inserted else {
                    throw DKIMTagListError("tag \(spec.name)= appears more than once")
                }
                tags.append(spec)
            }
            start = end + 1
        }
        self.tags = tags
    }

    /// The value of the tag named `name`, if present.
    public subscript(name: String) -> String? {
        tags.first { $0.name == name }?.value
    }

    /// A tag-spec, or nil for the whitespace that may follow the final ";".
    private static func parseSpec(_ octets: [UInt8], _ range: Range<Int>, isLast: Bool) throws(DKIMTagListError)
        -> Tag?
    {
        var index = range.lowerBound
        skipWhitespace(octets, &index, range.upperBound)
        if index == range.upperBound {
            // `[";"]` at the end of the list permits an empty last part; "a=1;;b=2" is malformed.
            if isLast && range.lowerBound > 0 { return nil }
            throw DKIMTagListError(isLast ? "empty tag list" : "empty tag between semicolons")
        }
        let nameStart = index
        guard isAlpha(octets[index]) else { throw DKIMTagListError("malformed tag name") }
        while index < range.upperBound, isAlpha(octets[index]) || isDigit(octets[index]) || octets[index] == 0x5F {
            index += 1
        }
        let name = String(decoding: octets[nameStart..<index], as: UTF8.self)
        skipWhitespace(octets, &index, range.upperBound)
        guard index < range.upperBound, octets[index] == UInt8(ascii: "=") else {
            throw DKIMTagListError("tag \(name) has no \"=\"")
        }
        index += 1
        let valueRange = index..<range.upperBound
        for octet in octets[valueRange] where (octet < 0x20 && !isWhitespace(octet)) || octet == 0x7F {
            throw DKIMTagListError("tag \(name)= contains a control character")
        }
        var valueStart = valueRange.lowerBound
        skipWhitespace(octets, &valueStart, range.upperBound)
        var valueEnd = range.upperBound
        while valueEnd > valueStart, isWhitespace(octets[valueEnd - 1]) { valueEnd -= 1 }
        let value = String(decoding: octets[valueStart..<valueEnd], as: UTF8.self)
        return Tag(name: name, value: value, valueRange: valueRange)
    }

    /// FWS within a header field and plain WSP within a DNS record.
    static func isWhitespace(_ octet: UInt8) -> Bool {
        octet == 0x20 || octet == 0x09 || octet == 0x0D || octet == 0x0A
    }

    private static func skipWhitespace(_ octets: [UInt8], _ index: inout Int, _ end: Int) {
        while index < end, isWhitespace(octets[index]) { index += 1 }
    }

    private static func isAlpha(_ octet: UInt8) -> Bool {
        (octet | 0x20) >= UInt8(ascii: "a") && (octet | 0x20) <= UInt8(ascii: "z")
    }

    private static func isDigit(_ octet: UInt8) -> Bool {
        octet >= UInt8(ascii: "0") && octet <= UInt8(ascii: "9")
    }
}

extension DKIMTagList {
    /// A value with all whitespace removed: base64 values (`b=`, `bh=`, `p=`) may be folded
    /// anywhere (§3.2, §3.5).
    public static func removingWhitespace(_ value: String) -> String {
        String(
            String.UnicodeScalarView(
                value.unicodeScalars.filter { !($0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\n") }))
    }
}

/// Why a tag list is invalid.
public struct DKIMTagListError: Error, Sendable, Hashable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}
