import NIOCore
import NIOHTTP1
import NIOPosix
import SMTPProtocol

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// An rspamd client (rspamd's HTTP protocol, `POST /checkv2` to a normal worker): one
/// HTTP/1.1 request per message with the envelope in request headers (`IP`, `Helo`,
/// `Hostname`, `From`, one `Rcpt` per recipient, `Queue-Id`, `User`, `MTA-Name`), the message
/// as the body, a JSON answer.
///
/// rspamd's action becomes the verdict's: `reject` → reject (`554 5.7.1`), `soft reject`
/// and `greylist` → tempfail (`451 4.7.1`), `discard`, `quarantine`; `no action`,
/// `add header` and `rewrite subject` leave the action `none` (the rules decide; `isSpam` is
/// true for the last two). rspamd's `messages.smtp_message` becomes the reply's text. Its
/// `milter` block (`add_headers`, `remove_headers`, `change_from`, `add_rcpt`, `del_rcpt`),
/// a rewritten `subject` and a `dkim-signature` become header and envelope changes.
public struct RspamdFilter: ContentFilter {
    public let name: String
    public let endpoint: FilterEndpoint
    public let timeouts: FilterTimeouts
    /// The largest answer body read; a larger one is `replyTooLarge`.
    public let maximumReplySize: Int
    let group: any EventLoopGroup

    public init(
        endpoint: FilterEndpoint, timeouts: FilterTimeouts = FilterTimeouts(), maximumReplySize: Int = 1 << 20,
        name: String = "rspamd", group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.name = name
        self.endpoint = endpoint
        self.timeouts = timeouts
        self.maximumReplySize = maximumReplySize
        self.group = group
    }

    public func check(_ message: ByteBuffer, envelope: FilterEnvelope) async throws(FilterError) -> FilterVerdict {
        let peer = "\(name) \(endpoint)"
        let head = Self.requestHead(endpoint: endpoint, envelope: envelope, contentLength: message.readableBytes)
        let limit = maximumReplySize
        let (status, body) = try await FilterConnection.exchange(
            with: endpoint, peer: peer, group: group, timeouts: timeouts, receiving: HTTPClientResponsePart.self,
            sending: HTTPClientRequestPart.self,
            configure: { channel in try channel.pipeline.syncOperations.addHTTPClientHandlers() }
        ) { inbound, outbound in
            try await outbound.write(.head(head))
            try await outbound.write(.body(.byteBuffer(message)))
            try await outbound.write(.end(nil))
            var status: HTTPResponseStatus?
            var body = ByteBuffer()
            while let part = try await inbound.next() {
                switch part {
                case .head(let response):
                    // 1xx answers precede the real one.
                    if response.status.code >= 200 { status = response.status }
                case .body(var chunk):
                    guard body.readableBytes + chunk.readableBytes <= limit else {
                        throw FilterError.replyTooLarge("\(peer): answer larger than \(limit) bytes")
                    }
                    body.writeBuffer(&chunk)
                case .end:
                    if let status { return (status, body) }
                }
            }
            throw FilterError.connectionClosed("\(peer): connection closed before the answer was complete")
        }
        guard status == .ok else {
            let text = String(decoding: body.readableBytesView.prefix(200), as: UTF8.self)
            let detail =
                (try? JSONDecoder().decode(RspamdReply.self, from: Data(body.readableBytesView)))?.error ?? text
            throw .filterFailed("\(peer): HTTP \(status.code)\(detail.isEmpty ? "" : ": \(detail)")")
        }
        let reply: RspamdReply
        do {
            reply = try JSONDecoder().decode(RspamdReply.self, from: Data(body.readableBytesView))
        } catch {
            throw .malformedReply("\(peer): answer is not rspamd's JSON: \(error)")
        }
        return try reply.verdict(filter: name, peer: peer)
    }

    /// The request head; a header whose value would need a line break is left out (no SMTP
    /// command lets one through, so such a value is not worth sending).
    static func requestHead(endpoint: FilterEndpoint, envelope: FilterEnvelope, contentLength: Int) -> HTTPRequestHead {
        var headers = HTTPHeaders()
        func add(_ name: String, _ value: String?) {
            guard let value, !value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
                return
            }
            headers.add(name: name, value: value)
        }
        switch endpoint {
        case .tcp(let host, let port): add("Host", host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)")
        case .unix: add("Host", "localhost")
        }
        add("Connection", "close")
        add("Content-Length", "\(contentLength)")
        add("IP", envelope.clientAddressText)
        add("Helo", envelope.helo)
        add("Hostname", envelope.clientName)
        // rspamd reads an empty From as the null reverse-path.
        add("From", envelope.sender.isEmpty ? "<>" : envelope.sender)
        for recipient in envelope.recipients { add("Rcpt", recipient) }
        add("Queue-Id", envelope.queueID)
        add("User", envelope.authenticatedUser)
        add("MTA-Name", envelope.hostname)
        return HTTPRequestHead(version: .http1_1, method: .POST, uri: "/checkv2", headers: headers)
    }
}

/// The parts of rspamd's `/checkv2` JSON answer a verdict needs.
struct RspamdReply: Decodable {
    var action: String?
    var score: Double?
    var requiredScore: Double?
    var symbols: [String: Symbol]?
    var subject: String?
    var messages: Messages?
    var milter: Milter?
    var dkimSignature: OneOrMany<String>?
    var error: String?

    enum CodingKeys: String, CodingKey {
        case action, score, symbols, subject, messages, milter, error
        case requiredScore = "required_score"
        case dkimSignature = "dkim-signature"
    }

    struct Symbol: Decodable {
        var score: Double?
    }

    struct Messages: Decodable {
        var smtpMessage: String?

        enum CodingKeys: String, CodingKey { case smtpMessage = "smtp_message" }

        init(from decoder: any Decoder) throws {
            // Other messages may be of any type; only smtp_message matters.
            let container = try decoder.container(keyedBy: CodingKeys.self)
            smtpMessage = try? container.decodeIfPresent(String.self, forKey: .smtpMessage)
        }
    }

    /// lua_mime.modify_headers: a header to add is a string, `{value, order}`, or an array of
    /// those; a header to remove names an instance (0 = all) or an array of instances.
    struct Milter: Decodable {
        var addHeaders: [String: OneOrMany<AddedHeader>]?
        var removeHeaders: [String: OneOrMany<Int>]?
        var changeFrom: String?
        var addRcpt: OneOrMany<String>?
        var delRcpt: OneOrMany<String>?

        enum CodingKeys: String, CodingKey {
            case addHeaders = "add_headers"
            case removeHeaders = "remove_headers"
            case changeFrom = "change_from"
            case addRcpt = "add_rcpt"
            case delRcpt = "del_rcpt"
        }
    }

    struct AddedHeader: Decodable {
        var value: String
        var order: Int?

        enum CodingKeys: String, CodingKey { case value, order }

        init(from decoder: any Decoder) throws {
            if let value = try? decoder.singleValueContainer().decode(String.self) {
                self.value = value
                self.order = nil
            } else {
                let container = try decoder.container(keyedBy: CodingKeys.self)
                value = try container.decode(String.self, forKey: .value)
                order = try container.decodeIfPresent(Int.self, forKey: .order)
            }
        }
    }

    enum OneOrMany<Element: Decodable>: Decodable {
        case one(Element)
        case many([Element])

        init(from decoder: any Decoder) throws {
            if let many = try? decoder.singleValueContainer().decode([Element].self) {
                self = .many(many)
            } else {
                self = .one(try decoder.singleValueContainer().decode(Element.self))
            }
        }

        var elements: [Element] {
            switch self {
            case .one(let element): [element]
            case .many(let elements): elements
            }
        }
    }

    func verdict(filter: String, peer: String) throws(FilterError) -> FilterVerdict {
        guard let action else {
            throw .malformedReply("\(peer): answer without an action" + (error.map { ": \($0)" } ?? ""))
        }
        var verdict = FilterVerdict(filter: filter, score: score, threshold: requiredScore)
        // The symbols that matched, strongest first.
        verdict.symbols = (symbols ?? [:]).sorted { left, right in
            let (a, b) = (left.value.score ?? 0, right.value.score ?? 0)
            return a != b ? a > b : left.key < right.key
        }.map(\.key)
        let smtpMessage = messages?.smtpMessage.map { FilterHeaderField.normalizedValue(Array($0.utf8)) }
            .map { $0.replacingCRLF() }.flatMap { $0.isEmpty ? nil : $0 }
        switch action {
        case "no action":
            verdict.isSpam = false
        case "greylist":
            verdict.isSpam = false
            verdict.action = .tempfail(SMTPReply(451, EnhancedStatusCode(4, 7, 1), smtpMessage ?? "Try again later"))
        case "add header":
            verdict.isSpam = true
        case "rewrite subject":
            verdict.isSpam = true
            if let subject {
                verdict.headerChanges.append(
                    .replace(
                        FilterHeaderField(
                            name: "Subject", value: FilterHeaderField.normalizedValue(Array(subject.utf8))),
                        instance: 1))
            }
        case "soft reject":
            verdict.action = .tempfail(SMTPReply(451, EnhancedStatusCode(4, 7, 1), smtpMessage ?? "Try again later"))
        case "reject":
            verdict.isSpam = true
            verdict.action = .reject(
                SMTPReply(554, EnhancedStatusCode(5, 7, 1), smtpMessage ?? "Spam message rejected"))
        case "discard":
            verdict.isSpam = true
            verdict.action = .discard
        case "quarantine":
            verdict.isSpam = true
            verdict.action = .quarantine(reason: smtpMessage ?? "rspamd")
        default:
            verdict.notes.append("unknown action \(String(action.prefix(40)).debugDescription)")
        }
        if let milter {
            // Names sorted: JSON objects have no order, and verdicts should not change between runs.
            for (name, headers) in (milter.removeHeaders ?? [:]).sorted(by: { $0.key < $1.key }) {
                guard let name = FilterHeaderField.validatedName(Array(name.utf8)) else {
                    throw .malformedReply(
                        "\(peer): bad header name to remove \(String(name.prefix(80)).debugDescription)")
                }
                for instance in headers.elements {
                    verdict.headerChanges.append(.delete(name: name, instance: instance))
                }
            }
            for (name, headers) in (milter.addHeaders ?? [:]).sorted(by: { $0.key < $1.key }) {
                for header in headers.elements {
                    let field = try FilterHeaderField.validated(
                        name: Array(name.utf8), value: Array(header.value.utf8), from: peer)
                    // order >= 0 inserts at that position, anything else appends.
                    if let order = header.order, order >= 0 {
                        verdict.headerChanges.append(.insert(field, at: order))
                    } else {
                        verdict.headersToAdd.append(field)
                    }
                }
            }
            if let sender = milter.changeFrom { verdict.envelopeChanges.append(.changeSender(sender, parameters: nil)) }
            for recipient in milter.addRcpt?.elements ?? [] {
                verdict.envelopeChanges.append(.addRecipient(recipient, parameters: nil))
            }
            for recipient in milter.delRcpt?.elements ?? [] {
                verdict.envelopeChanges.append(.deleteRecipient(recipient))
            }
        }
        for signature in dkimSignature?.elements ?? [] {
            verdict.headerChanges.append(
                .insert(
                    try FilterHeaderField.validated(
                        name: Array("DKIM-Signature".utf8), value: Array(signature.utf8), from: peer), at: 0))
        }
        if let smtpMessage { verdict.notes.append("message \(smtpMessage.debugDescription)") }
        return verdict
    }
}

extension String {
    /// Reply text is one line: folded text joined with single spaces.
    func replacingCRLF() -> String {
        split(whereSeparator: { $0 == "\r\n" || $0 == "\r" || $0 == "\n" })
            .map { $0.trimmingWhitespace() }.joined(separator: " ")
    }
}
