/// The `TLS-Required:` header field of RFC 8689 §5:
///
///     tls-required-field = "TLS-Required:" [FWS] "No" CRLF
///
/// Its only value, `No`, asks that the recipient domain's TLS policy (MTA-STS, DANE) be
/// ignored for this message; anything else in the field means nothing.
public enum TLSRequiredField {
    /// The header section (the start of the message, up to its empty line or the end of
    /// `header`) has `TLS-Required: No`. Field names are case-insensitive (RFC 5322 §1.2.2);
    /// the value is compared case-insensitively too, after unfolding, as senders vary.
    public static func saysNo<Bytes: Collection<UInt8>>(_ header: Bytes) -> Bool {
        var lines: [[UInt8]] = []
        var current: [UInt8] = []
        for byte in header {
            if byte == UInt8(ascii: "\n") {
                if current.last == UInt8(ascii: "\r") { current.removeLast() }
                if current.isEmpty { break }  // the end of the header section
                if let first = current.first, first == UInt8(ascii: " ") || first == UInt8(ascii: "\t"),
                    !lines.isEmpty
                {
                    lines[lines.count - 1] += current  // a folded continuation
                } else {
                    lines.append(current)
                }
                current = []
            } else {
                current.append(byte)
            }
        }
        let name = Array("tls-required:".utf8)
        return lines.contains { line in
            guard line.count >= name.count,
                zip(line.prefix(name.count), name).allSatisfy({ lowercased($0) == $1 })
            else { return false }
            let value = line.dropFirst(name.count).filter { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\t") }
            return value.map(lowercased) == Array("no".utf8)
        }
    }

    private static func lowercased(_ byte: UInt8) -> UInt8 {
        (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte + 32 : byte
    }
}
