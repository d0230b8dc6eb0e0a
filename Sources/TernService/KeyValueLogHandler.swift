import Foundation
import Logging
import NIOConcurrencyHelpers

/// SPEC §2.7: one line per event, `key=value`, like Postfix's maillog but machine-readable:
///
///     time=2026-11-23T10:00:00.123Z level=info component=smtpd event=queued queue_id=… from=<a@b> …
///
/// Values with spaces, quotes or `=` are quoted; control characters are escaped so a hostile
/// client can never forge a log line. Each line goes out in a single write(2).
public struct KeyValueLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    private let label: String
    private let descriptor: Int32

    public init(label: String, descriptor: Int32 = 2) {
        self.label = label
        self.descriptor = descriptor
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        // Built as bytes, without merging the two metadata dictionaries: a busy server writes
        // several lines per message. The event's own metadata wins over the logger's.
        let extra = event.metadata ?? [:]
        func value(_ key: String) -> Logger.MetadataValue? { extra[key] ?? metadata[key] }
        var line: [UInt8] = []
        line.reserveCapacity(320)
        line.append(contentsOf: "time=".utf8)
        Self.appendTimestamp(to: &line)
        line.append(contentsOf: " level=".utf8)
        line.append(contentsOf: event.level.rawValue.utf8)
        line.append(contentsOf: " component=".utf8)
        line.append(contentsOf: (value("component").map(Self.text) ?? label).utf8)
        // `event` and `queue_id` first: `grep queue_id=X` and the eye both find them at once.
        for key in ["event", "queue_id"] {
            if let found = value(key) { Self.append(key, Self.text(found), to: &line) }
        }
        Self.append("msg", "\(event.message)", to: &line)
        var rest: [(key: String, value: Logger.MetadataValue)] = []
        rest.reserveCapacity(metadata.count + extra.count)
        for (key, value) in metadata where !Self.placed.contains(key) && extra[key] == nil { rest.append((key, value)) }
        for (key, value) in extra where !Self.placed.contains(key) { rest.append((key, value)) }
        rest.sort { $0.key < $1.key }
        for (key, value) in rest { Self.append(key, Self.text(value), to: &line) }
        line.append(UInt8(ascii: "\n"))
        line.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = write(descriptor, buffer.baseAddress! + offset, buffer.count - offset)
                if written <= 0 {
                    if written < 0 && errno == EINTR { continue }
                    return
                }
                offset += written
            }
        }
    }

    /// Keys written at fixed places, before the sorted rest.
    private static let placed: Set<String> = ["component", "event", "queue_id"]

    private static func text(_ value: Logger.MetadataValue) -> String {
        if case .string(let string) = value { return string }
        return value.description
    }

    /// Appends ` key=value` to a line being built.
    static func append(_ key: String, _ value: String, to line: inout String) {
        var bytes: [UInt8] = []
        append(key, value, to: &bytes)
        line += String(decoding: bytes, as: UTF8.self)
    }

    static func append(_ key: String, _ value: String, to line: inout [UInt8]) {
        line.append(UInt8(ascii: " "))
        line.append(contentsOf: key.utf8)
        line.append(UInt8(ascii: "="))
        // Most values (IDs, addresses, numbers) need neither quotes nor escapes.
        if !value.isEmpty, value.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != 0x22 && $0 != 0x3D && $0 != 0x5C }) {
            line.append(contentsOf: value.utf8)
            return
        }

        var escaped = ""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": escaped += "\\\""
            case "\\": escaped += "\\\\"
            case "\n": escaped += "\\n"
            case "\r": escaped += "\\r"
            case "\t": escaped += "\\t"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    escaped += "\\x" + String(scalar.value, radix: 16)
                } else {
                    escaped.unicodeScalars.append(scalar)
                }
            }
        }
        let needsQuotes = value.isEmpty || escaped != value || value.contains { $0 == " " || $0 == "=" }
        line.append(contentsOf: (needsQuotes ? "\"\(escaped)\"" : escaped).utf8)
    }

    /// `2026-11-23T10:00:00.123Z`, written digit by digit: Foundation's `String(format:)`
    /// cost more than everything else in a log line.
    static func timestamp() -> String {
        var bytes: [UInt8] = []
        appendTimestamp(to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    static func appendTimestamp(to line: inout [UInt8]) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var time = now.tv_sec
        var parts = tm()
        gmtime_r(&time, &parts)
        func put(_ value: Int, _ digits: Int, then separator: UInt8?) {
            var divisor = 1
            for _ in 1..<digits { divisor *= 10 }
            var value = value
            while divisor > 0 {
                line.append(UInt8(48 + value / divisor % 10))
                value %= divisor
                divisor /= 10
            }
            if let separator { line.append(separator) }
        }
        put(Int(parts.tm_year) + 1900, 4, then: UInt8(ascii: "-"))
        put(Int(parts.tm_mon) + 1, 2, then: UInt8(ascii: "-"))
        put(Int(parts.tm_mday), 2, then: UInt8(ascii: "T"))
        put(Int(parts.tm_hour), 2, then: UInt8(ascii: ":"))
        put(Int(parts.tm_min), 2, then: UInt8(ascii: ":"))
        put(Int(parts.tm_sec), 2, then: UInt8(ascii: "."))
        put(now.tv_nsec / 1_000_000, 3, then: UInt8(ascii: "Z"))
    }
}
