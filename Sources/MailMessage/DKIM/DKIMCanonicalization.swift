/// A DKIM canonicalisation algorithm (RFC 6376 §3.4), named as in the `c=` tag.
public enum DKIMCanonicalization: String, Sendable, Hashable, CaseIterable {
    /// Tolerates almost no change (§3.4.1, §3.4.3).
    case simple
    /// Tolerates whitespace changes and header refolding (§3.4.2, §3.4.4).
    case relaxed

    /// The field as it enters the header hash, with its final CRLF.
    public func canonicalize(_ field: HeaderField) -> [UInt8] {
        switch self {
        case .simple:
            // §3.4.1: "MUST NOT change header fields in any way".
            return field.octets
        case .relaxed:
            return Self.relaxed(field)
        }
    }

    /// §3.4.2: lower-case the name; unfold; reduce every run of WSP to one SP; delete WSP at the
    /// end of the value and around the colon; end with CRLF.
    private static func relaxed(_ field: HeaderField) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(field.octets.count)
        for octet in field.name.utf8 {
            output.append(octet >= UInt8(ascii: "A") && octet <= UInt8(ascii: "Z") ? octet + 32 : octet)
        }
        output.append(UInt8(ascii: ":"))
        let value = field.value
        var pendingSpace = false
        var wroteValue = false
        var index = value.startIndex
        while index < value.endIndex {
            let octet = value[index]
            if octet == 0x0D, index + 1 < value.endIndex, value[index + 1] == 0x0A {
                index += 2  // unfolding removes the CRLF of every line, the last one too
                continue
            }
            index += 1
            if octet == 0x20 || octet == 0x09 {
                pendingSpace = true
                continue
            }
            if pendingSpace && wroteValue { output.append(0x20) }
            pendingSpace = false
            wroteValue = true
            output.append(octet)
        }
        output.append(0x0D)
        output.append(0x0A)
        return output
    }
}
