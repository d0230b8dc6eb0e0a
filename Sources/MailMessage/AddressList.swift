/// Extracts the addr-specs of an RFC 5322 §3.4 `address-list` (To, Cc, Bcc), for
/// `sendmail -t`. Handles display names, quoted strings, comments and groups; returns the
/// addresses in order, without angle brackets.
public enum AddressList {
    public static func addresses(in value: String) -> [String] {
        var result: [String] = []
        var current = ""
        var angle: String?
        var inQuotes = false
        var commentDepth = 0
        var escaped = false

        func finish() {
            let address = (angle ?? current).trimmingWhitespace()
            if !address.isEmpty && address.contains("@") { result.append(address) }
            current = ""
            angle = nil
        }

        for character in value {
            if escaped {
                if angle != nil { angle!.append(character) } else { current.append(character) }
                escaped = false
                continue
            }
            if commentDepth > 0 {
                if character == "\\" {
                    escaped = true
                } else if character == "(" {
                    commentDepth += 1
                } else if character == ")" {
                    commentDepth -= 1
                }
                continue
            }
            if inQuotes {
                if character == "\\" { escaped = true; continue }
                if character == "\"" { inQuotes = false }
                if angle != nil { angle!.append(character) } else { current.append(character) }
                continue
            }
            switch character {
            case "\"":
                inQuotes = true
                if angle != nil { angle!.append(character) } else { current.append(character) }
            case "(":
                commentDepth = 1
            case "<":
                angle = ""
            case ">":
                if let inside = angle { current = inside }
                angle = nil
            case ",", ";":
                finish()
            case ":":
                // `group: a@b, c@d;` — the display name before the colon is not an address.
                if angle == nil && !current.contains("@") { current = "" } else { current.append(character) }
            default:
                if angle != nil { angle!.append(character) } else { current.append(character) }
            }
        }
        finish()
        return result
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first == " " || first == "\t" || first == "\r" || first == "\n" {
            scalars.removeFirst()
        }
        while let last = scalars.last, last == " " || last == "\t" || last == "\r" || last == "\n" {
            scalars.removeLast()
        }
        return String(scalars)
    }
}
