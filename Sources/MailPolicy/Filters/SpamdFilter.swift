import NIOCore
import NIOPosix

/// A SpamAssassin `spamd` client (the SPAMC/SPAMD protocol 1.5 of `spamc`): one connection
/// per message, the request `SYMBOLS SPAMC/1.5` or `HEADERS SPAMC/1.5` with `Content-length`
/// and an optional `User`, then the message; spamd answers and closes.
///
/// - `symbols` (the default) asks for the score, the threshold and the names of the tests
///   that hit: a small answer that does not depend on SpamAssassin's report templates.
/// - `headers` asks for the header section SpamAssassin would write; the verdict then also
///   carries its `X-Spam-*` fields to add, a rewritten `Subject` (`rewrite_header Subject`)
///   as a replacement, and the test names from `X-Spam-Status` (`tests=…`, as far as the
///   site's `add_header` template keeps them there).
///
/// spamd never asks for an action: the verdict's action is `none`, and the rules decide from
/// `isSpam` and the score.
public struct SpamdFilter: ContentFilter {
    public enum Command: String, Sendable, Hashable {
        case symbols = "SYMBOLS"
        case headers = "HEADERS"
    }

    public let name: String
    public let endpoint: FilterEndpoint
    /// The `User` header: whose SpamAssassin preferences apply; nil leaves spamd's default.
    public let user: String?
    public let command: Command
    public let timeouts: FilterTimeouts
    /// The largest answer read; a larger one is `replyTooLarge`.
    public let maximumReplySize: Int
    let group: any EventLoopGroup

    public init(
        endpoint: FilterEndpoint, user: String? = nil, command: Command = .symbols,
        timeouts: FilterTimeouts = FilterTimeouts(), maximumReplySize: Int = 1 << 20, name: String = "spamd",
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.name = name
        self.endpoint = endpoint
        self.user = user
        self.command = command
        self.timeouts = timeouts
        self.maximumReplySize = maximumReplySize
        self.group = group
    }

    public func check(_ message: ByteBuffer, envelope: FilterEnvelope) async throws(FilterError) -> FilterVerdict {
        let peer = "\(name) \(endpoint)"
        let request = try SpamdRequest.encode(command: command, user: user, message: message, peer: peer)
        let limit = maximumReplySize
        let response = try await FilterConnection.exchange(
            with: endpoint, peer: peer, group: group, timeouts: timeouts, receiving: ByteBuffer.self,
            sending: ByteBuffer.self
        ) { inbound, outbound in
            try await outbound.write(request)
            var received = ByteBuffer()
            while true {
                let chunk = try await inbound.next()
                if var chunk {
                    guard received.readableBytes + chunk.readableBytes <= limit else {
                        throw FilterError.replyTooLarge("\(peer): answer larger than \(limit) bytes")
                    }
                    received.writeBuffer(&chunk)
                }
                if let response = try SpamdResponse.parse(received, atEnd: chunk == nil, peer: peer) {
                    return response
                }
            }
        }
        return try response.verdict(filter: name, command: command, message: message, peer: peer)
    }
}

enum SpamdRequest {
    /// `COMMAND SPAMC/1.5`, `Content-length`, `User`, an empty line, the message.
    static func encode(command: SpamdFilter.Command, user: String?, message: ByteBuffer, peer: String)
        throws(FilterError) -> ByteBuffer
    {
        var request = ByteBuffer()
        request.writeString("\(command.rawValue) SPAMC/1.5\r\n")
        request.writeString("Content-length: \(message.readableBytes)\r\n")
        if let user {
            // spamd refuses control characters in User; a line break would inject a header.
            guard !user.isEmpty, user.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7f }) else {
                throw .configuration("\(peer): the spamd user must be one line of printable text")
            }
            request.writeString("User: \(user)\r\n")
        }
        request.writeString("\r\n")
        var body = message
        request.writeBuffer(&body)
        return request
    }
}

/// spamd's answer (spamd's `check`): a status line `SPAMD/1.1 0 EX_OK`, header lines
/// (`Content-length`, `Spam: True ; 15.2 / 5.0`), an empty line and a body: the test names
/// for SYMBOLS, the rewritten header section for HEADERS.
struct SpamdResponse: Sendable, Hashable {
    var isSpam: Bool
    var score: Double
    var threshold: Double
    var body: ByteBuffer

    /// The longest status or header line accepted.
    static let maximumLineLength = 1000

    /// sysexits.h, as spamd names its answer codes.
    static let exitCodes: [Int: String] = [
        64: "EX_USAGE", 65: "EX_DATAERR", 66: "EX_NOINPUT", 67: "EX_NOUSER", 68: "EX_NOHOST", 69: "EX_UNAVAILABLE",
        70: "EX_SOFTWARE", 71: "EX_OSERR", 72: "EX_OSFILE", 73: "EX_CANTCREAT", 74: "EX_IOERR", 75: "EX_TEMPFAIL",
        76: "EX_PROTOCOL", 77: "EX_NOPERM", 78: "EX_CONFIG", 79: "EX_TIMEOUT",
    ]

    /// The answer in `buffer`, nil while more is needed; `atEnd` says spamd has closed the
    /// connection, so that whatever came is all there is. An error status (any code but 0)
    /// fails as soon as its line is complete.
    static func parse(_ buffer: ByteBuffer, atEnd: Bool, peer: String) throws(FilterError) -> SpamdResponse? {
        let bytes = buffer.readableBytesView
        var lines: [Substring] = []
        var position = bytes.startIndex
        var headerEnd: Int?
        while let newline = bytes[position...].firstIndex(of: UInt8(ascii: "\n")) {
            var end = newline
            if end > position, bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
            guard end - position <= maximumLineLength else { throw .malformedReply("\(peer): answer line too long") }
            let line = Substring(decoding: bytes[position..<end], as: UTF8.self)
            position = newline + 1
            if line.isEmpty && !lines.isEmpty {
                headerEnd = position
                break
            }
            lines.append(line)
            if lines.count == 1 { try checkStatus(line, peer: peer) }
            guard lines.count <= 64 else { throw .malformedReply("\(peer): too many header lines in the answer") }
        }
        guard let headerEnd else {
            if bytes.count - (position - bytes.startIndex) > maximumLineLength {
                throw .malformedReply("\(peer): answer line too long")
            }
            if atEnd {
                throw FilterError.connectionClosed(
                    "\(peer): connection closed " + (lines.isEmpty ? "without an answer" : "inside the answer's header")
                )
            }
            return nil
        }

        var contentLength: Int?
        var spam: (Bool, Double, Double)?
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else {
                throw .malformedReply("\(peer): bad answer header \(String(line.prefix(80)).debugDescription)")
            }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingWhitespace()
            switch name {
            case "content-length":
                guard let length = Int(value), length >= 0 else {
                    throw .malformedReply("\(peer): bad Content-length \(String(value.prefix(20)))")
                }
                contentLength = length
            case "spam":
                spam = try parseSpam(value, peer: peer)
            default:
                break  // Later protocol versions may add headers.
            }
        }
        let available = bytes.endIndex - headerEnd
        let body: ByteBuffer
        if let contentLength {
            guard available >= contentLength else {
                if atEnd { throw .connectionClosed("\(peer): connection closed inside the answer's body") }
                return nil
            }
            body = buffer.getSlice(at: headerEnd, length: contentLength)!
        } else {
            // Without Content-length the body runs to the end of the connection.
            guard atEnd else { return nil }
            body = buffer.getSlice(at: headerEnd, length: available)!
        }
        guard let (isSpam, score, threshold) = spam else {
            throw .malformedReply("\(peer): answer without a Spam header")
        }
        return SpamdResponse(isSpam: isSpam, score: score, threshold: threshold, body: body)
    }

    /// `SPAMD/1.1 0 EX_OK`; any other code is spamd's own failure.
    private static func checkStatus(_ line: Substring, peer: String) throws(FilterError) {
        let fields = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard fields.count >= 2, fields[0].hasPrefix("SPAMD/"), let code = Int(fields[1]) else {
            throw .malformedReply("\(peer): not a spamd answer: \(String(line.prefix(80)).debugDescription)")
        }
        guard code == 0 else {
            let text = fields.count > 2 ? String(fields[2].prefix(200)) : ""
            let name = exitCodes[code] ?? "code \(code)"
            throw .filterFailed("\(peer): spamd answered \(name)\(text.isEmpty ? "" : ": \(text)")")
        }
    }

    /// `True ; 15.2 / 5.0` (`Yes`/`No` in answers to REPORT_IFSPAM).
    private static func parseSpam(_ value: Substring, peer: String) throws(FilterError) -> (Bool, Double, Double) {
        let parts = value.split(separator: ";", maxSplits: 1)
        let numbers = parts.count == 2 ? parts[1].split(separator: "/") : []
        guard numbers.count == 2, let score = Double(numbers[0].trimmingWhitespace()),
            let threshold = Double(numbers[1].trimmingWhitespace()), score.isFinite, threshold.isFinite
        else {
            throw .malformedReply("\(peer): bad Spam header \(String(value.prefix(80)).debugDescription)")
        }
        switch parts[0].trimmingWhitespace().lowercased() {
        case "true", "yes": return (true, score, threshold)
        case "false", "no": return (false, score, threshold)
        default: throw .malformedReply("\(peer): bad Spam header \(String(value.prefix(80)).debugDescription)")
        }
    }

    func verdict(filter: String, command: SpamdFilter.Command, message: ByteBuffer, peer: String)
        throws(FilterError) -> FilterVerdict
    {
        var verdict = FilterVerdict(filter: filter, score: score, threshold: threshold, isSpam: isSpam)
        switch command {
        case .symbols:
            // Test names separated by commas (spamd's get_names_of_tests_hit).
            verdict.symbols = String(decoding: body.readableBytesView, as: UTF8.self)
                .split(whereSeparator: { $0 == "," || $0.isWhitespace }).map(String.init)
        case .headers:
            let returned = MessageHeaderSection(body).fields
            let original = MessageHeaderSection(message).fields
            for field in returned where field.nameText.lowercased().hasPrefix("x-spam-") {
                verdict.headersToAdd.append(
                    try FilterHeaderField.validated(name: field.name, value: field.value, from: peer))
                if field.nameText.lowercased() == "x-spam-status" {
                    verdict.symbols = Self.tests(inStatus: FilterHeaderField.normalizedValue(field.value))
                }
            }
            let subject = { (fields: [MessageHeaderSection.Field]) in
                fields.first { $0.nameText.lowercased() == "subject" }.map {
                    FilterHeaderField.normalizedValue($0.value)
                }
            }
            if let rewritten = subject(returned), rewritten != subject(original) {
                verdict.headerChanges.append(
                    .replace(FilterHeaderField(name: "Subject", value: rewritten), instance: 1))
            }
        }
        return verdict
    }

    /// The test names in `X-Spam-Status: Yes, score=1003.3 required=5.0 tests=GTUBE,MISSING_DATE,
    /// NO_RECEIVED autolearn=no`: after `tests=`, up to the next `name=` word.
    static func tests(inStatus status: String) -> [String] {
        let words = status.split(whereSeparator: \.isWhitespace)
        guard let start = words.firstIndex(where: { $0.hasPrefix("tests=") }) else { return [] }
        var names = words[start].dropFirst(6).split(separator: ",").map(String.init)
        for word in words[(start + 1)...] {
            if word.contains("=") { break }
            names.append(contentsOf: word.split(separator: ",").map(String.init))
        }
        return names == ["none"] ? [] : names
    }
}

extension Substring {
    func trimmingWhitespace() -> Substring {
        var text = self
        while let first = text.first, first == " " || first == "\t" { text = text.dropFirst() }
        while let last = text.last, last == " " || last == "\t" { text = text.dropLast() }
        return text
    }
}
