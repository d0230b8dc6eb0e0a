/// Where each key of a TOML document is written: TOMLKit reports positions only for syntax
/// errors, so this small scanner walks the (already valid) source once and maps key paths —
/// in the notation of `ConfigurationProblem.key`, `domains[1].aliases.sales` — to the line
/// that defines them: table headers `[a.b]`, array tables `[[domains]]` (numbered in order),
/// `key = value` lines, dotted keys, inline tables and array elements (each element at the
/// line it starts on). A key that is not written (a missing required key, say) maps to the
/// line of its nearest written parent.
struct KeyLineIndex {
    private var lines: [String: Int] = [:]

    init(source: String) {
        var scanner = Scanner(bytes: Array(source.utf8))
        scanner.scanDocument()
        lines = scanner.lines
    }

    /// The line of `key` or, when it is not written, of its nearest written parent.
    func line(for key: String) -> Int? {
        var key = Substring(key)
        while !key.isEmpty {
            if let line = lines[String(key)] { return line }
            if key.hasSuffix("]"), let open = key.lastIndex(of: "[") {
                key = key[..<open]
            } else if let dot = key.lastIndex(of: ".") {
                key = key[..<dot]
            } else {
                return nil
            }
        }
        return nil
    }

    /// The line where a key is itself written, without falling back to a parent.
    func exactLine(for key: String) -> Int? { lines[key] }

    private struct Scanner {
        let bytes: [UInt8]
        var position = 0
        var line = 1
        var lines: [String: Int] = [:]
        /// Array-of-tables paths (resolved, without the index) → how many tables so far.
        var arrayTables: [String: Int] = [:]

        init(bytes: [UInt8]) {
            self.bytes = bytes
        }

        var atEnd: Bool { position >= bytes.count }

        func peek(_ offset: Int = 0) -> UInt8? {
            position + offset < bytes.count ? bytes[position + offset] : nil
        }

        mutating func advance(_ count: Int = 1) {
            for _ in 0..<count where position < bytes.count {
                if bytes[position] == UInt8(ascii: "\n") { line += 1 }
                position += 1
            }
        }

        mutating func record(_ path: String, at line: Int) {
            if lines[path] == nil { lines[path] = line }
        }

        mutating func skipSpaces() {
            while let byte = peek(), byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") { advance() }
        }

        /// Spaces, newlines and comments: what may stand between array elements.
        mutating func skipBlank() {
            while let byte = peek() {
                switch byte {
                case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"), UInt8(ascii: "\n"): advance()
                case UInt8(ascii: "#"): skipToEndOfLine()
                default: return
                }
            }
        }

        mutating func skipToEndOfLine() {
            while let byte = peek(), byte != UInt8(ascii: "\n") { advance() }
        }

        mutating func scanDocument() {
            var table = ""
            while true {
                skipBlank()
                guard let byte = peek() else { return }
                let start = position
                let startLine = line
                if byte == UInt8(ascii: "[") {
                    table = scanHeader()
                } else {
                    let keys = scanKey()
                    var path = table
                    for key in keys {
                        path = path.isEmpty ? key : path + "." + key
                        record(path, at: startLine)
                    }
                    skipSpaces()
                    if peek() == UInt8(ascii: "=") {
                        advance()
                        skipSpaces()
                        scanValue(path)
                    }
                }
                skipToEndOfLine()
                if position == start { advance() }
            }
        }

        /// `[a.b]` or `[[a.b]]`; returns the resolved path later keys belong to.
        mutating func scanHeader() -> String {
            let headerLine = line
            let isArray = peek(1) == UInt8(ascii: "[")
            advance(isArray ? 2 : 1)
            let keys = scanKey()
            var path = ""
            for (index, key) in keys.enumerated() {
                path = path.isEmpty ? key : path + "." + key
                let isLast = index == keys.count - 1
                if isLast && isArray { break }
                if let count = arrayTables[path] { path += "[\(count - 1)]" }
                record(path, at: headerLine)
            }
            if isArray {
                let count = arrayTables[path, default: 0]
                arrayTables[path] = count + 1
                record(path, at: headerLine)
                path += "[\(count)]"
                record(path, at: headerLine)
            }
            return path
        }

        /// A dotted key: bare, "basic" or 'literal' parts joined by dots.
        mutating func scanKey() -> [String] {
            var keys: [String] = []
            while true {
                skipSpaces()
                guard let byte = peek() else { return keys }
                if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "'") {
                    advance()
                    var part: [UInt8] = []
                    while let next = peek(), next != byte, next != UInt8(ascii: "\n") {
                        if byte == UInt8(ascii: "\""), next == UInt8(ascii: "\\"), let escaped = peek(1) {
                            part.append(escaped)
                            advance(2)
                            continue
                        }
                        part.append(next)
                        advance()
                    }
                    advance()
                    keys.append(String(decoding: part, as: UTF8.self))
                } else {
                    let start = position
                    while let next = peek(), Self.isBareKey(next) { advance() }
                    guard position > start else { return keys }
                    keys.append(String(decoding: bytes[start..<position], as: UTF8.self))
                }
                skipSpaces()
                guard peek() == UInt8(ascii: ".") else { return keys }
                advance()
            }
        }

        static func isBareKey(_ byte: UInt8) -> Bool {
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: "_")
                || byte == UInt8(ascii: "-")
        }

        mutating func scanValue(_ path: String) {
            guard let byte = peek() else { return }
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "'"):
                scanString(quote: byte)
            case UInt8(ascii: "["):
                advance()
                var index = 0
                while true {
                    skipBlank()
                    guard let next = peek() else { return }
                    if next == UInt8(ascii: "]") {
                        advance()
                        return
                    }
                    let element = "\(path)[\(index)]"
                    record(element, at: line)
                    let start = position
                    scanValue(element)
                    skipBlank()
                    if peek() == UInt8(ascii: ",") {
                        advance()
                        index += 1
                    } else if position == start {
                        advance()
                    }
                }
            case UInt8(ascii: "{"):
                advance()
                while true {
                    skipBlank()
                    guard let next = peek() else { return }
                    if next == UInt8(ascii: "}") {
                        advance()
                        return
                    }
                    let start = position
                    let keyLine = line
                    var member = path
                    for key in scanKey() {
                        member += "." + key
                        record(member, at: keyLine)
                    }
                    skipSpaces()
                    if peek() == UInt8(ascii: "=") {
                        advance()
                        skipSpaces()
                        scanValue(member)
                    }
                    skipBlank()
                    if peek() == UInt8(ascii: ",") { advance() }
                    if position == start { advance() }
                }
            default:
                // Numbers, booleans, dates: up to the next delimiter.
                while let next = peek(), !Self.endsScalar(next) { advance() }
            }
        }

        static func endsScalar(_ byte: UInt8) -> Bool {
            byte == UInt8(ascii: ",") || byte == UInt8(ascii: "]") || byte == UInt8(ascii: "}")
                || byte == UInt8(ascii: "#") || byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r")
        }

        /// A basic or literal string, single- or multi-line; newlines inside are counted.
        mutating func scanString(quote: UInt8) {
            let escapes = quote == UInt8(ascii: "\"")
            if peek(1) == quote && peek(2) == quote {
                advance(3)
                while let byte = peek() {
                    if escapes && byte == UInt8(ascii: "\\") {
                        advance(2)
                    } else if byte == quote && peek(1) == quote && peek(2) == quote {
                        advance(3)
                        // Up to two more quotes may close the string (TOML 1.0 §String).
                        var extra = 0
                        while extra < 2 && peek() == quote {
                            advance()
                            extra += 1
                        }
                        return
                    } else {
                        advance()
                    }
                }
                return
            }
            advance()
            while let byte = peek(), byte != UInt8(ascii: "\n") {
                if escapes && byte == UInt8(ascii: "\\") {
                    advance(2)
                } else {
                    advance()
                    if byte == quote { return }
                }
            }
        }
    }
}
