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
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let component = merged.removeValue(forKey: "component").map { "\($0)" } ?? label
        var line = "time=\(Self.timestamp()) level=\(event.level) component=\(component)"
        // `event` and `queue_id` first: `grep queue_id=X` and the eye both find them at once.
        for key in ["event", "queue_id"] {
            if let value = merged.removeValue(forKey: key) { Self.append(key, "\(value)", to: &line) }
        }
        Self.append("msg", "\(event.message)", to: &line)
        for key in merged.keys.sorted() {
            Self.append(key, "\(merged[key]!)", to: &line)
        }
        line += "\n"
        var bytes = Array(line.utf8)
        bytes.withUnsafeMutableBytes { buffer in
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

    static func append(_ key: String, _ value: String, to line: inout String) {
        line += " \(key)="
        // Most values (IDs, addresses, numbers) need neither quotes nor escapes.
        if !value.isEmpty, value.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != 0x22 && $0 != 0x3D && $0 != 0x5C }) {
            line += value
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
        line += needsQuotes ? "\"\(escaped)\"" : escaped
    }

    /// `2026-11-23T10:00:00.123Z`, written digit by digit: Foundation's `String(format:)`
    /// cost more than everything else in a log line.
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var time = now.tv_sec
        var parts = tm()
        gmtime_r(&time, &parts)
        var bytes = [UInt8](repeating: 0, count: 24)
        func put(_ value: Int, _ digits: Int, at offset: Int) {
            var value = value
            for index in stride(from: offset + digits - 1, through: offset, by: -1) {
                bytes[index] = UInt8(48 + value % 10)
                value /= 10
            }
        }
        put(Int(parts.tm_year) + 1900, 4, at: 0)
        bytes[4] = UInt8(ascii: "-")
        put(Int(parts.tm_mon) + 1, 2, at: 5)
        bytes[7] = UInt8(ascii: "-")
        put(Int(parts.tm_mday), 2, at: 8)
        bytes[10] = UInt8(ascii: "T")
        put(Int(parts.tm_hour), 2, at: 11)
        bytes[13] = UInt8(ascii: ":")
        put(Int(parts.tm_min), 2, at: 14)
        bytes[16] = UInt8(ascii: ":")
        put(Int(parts.tm_sec), 2, at: 17)
        bytes[19] = UInt8(ascii: ".")
        put(now.tv_nsec / 1_000_000, 3, at: 20)
        bytes[23] = UInt8(ascii: "Z")
        return String(decoding: bytes, as: UTF8.self)
    }

}
