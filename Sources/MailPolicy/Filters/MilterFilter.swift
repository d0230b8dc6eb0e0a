import NIOCore
import NIOPosix
import SMTPProtocol

/// A milter client (the Sendmail milter protocol, version 6, as Postfix speaks it), run once
/// per message after DATA: a fresh connection replays the session to the filter (connect,
/// HELO, MAIL, each RCPT, DATA, each header field, end of headers, the body in chunks, end of
/// message), collects the modifications it asks for and its final decision, and quits.
///
/// The client offers every modification a verdict can carry (add, insert, change and delete
/// header fields, replace the body, change the sender, add and delete recipients, quarantine)
/// and every protocol step and reply the filter may decline; it leaves out what the filter
/// declines (SMFIP_NOCONNECT … SMFIP_NOBODY) and does not wait for replies it waives
/// (SMFIP_NR_*). Macros follow Postfix's defaults: `j`, `{daemon_name}`, `v`, `_`,
/// `{client_addr}`, `{client_name}` at connect; `i` from MAIL on; `{mail_addr}` and
/// `{auth_authen}` at MAIL; `{rcpt_addr}` at each RCPT.
///
/// Milter semantics decide the verdict: accept at any step accepts the message with no further
/// steps (no modifications); reject, tempfail or a reply code refuses it, except at RCPT, where
/// it refuses that recipient (`recipientRejections`) and the message goes on for the others;
/// discard drops it (ignored at connect and HELO, as Postfix does); quarantine holds it unless
/// the final decision refuses it.
public struct MilterFilter: ContentFilter {
    public let name: String
    public let endpoint: FilterEndpoint
    public let timeouts: FilterTimeouts
    /// The most bytes read from the filter for one message, body replacement included.
    public let maximumReplySize: Int
    let group: any EventLoopGroup

    /// The protocol version this client speaks.
    static let version: UInt32 = 6
    /// libmilter's MILTER_CHUNK_SIZE: the largest body chunk.
    static let chunkSize = 65535
    /// The most modification requests taken for one message.
    static let maximumModifications = 10_000

    public init(
        endpoint: FilterEndpoint, timeouts: FilterTimeouts = FilterTimeouts(), maximumReplySize: Int = 16 << 20,
        name: String = "milter", group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.name = name
        self.endpoint = endpoint
        self.timeouts = timeouts
        self.maximumReplySize = maximumReplySize
        self.group = group
    }

    public func check(_ message: ByteBuffer, envelope: FilterEnvelope) async throws(FilterError) -> FilterVerdict {
        let peer = "\(name) \(endpoint)"
        let name = self.name
        let limit = maximumReplySize
        return try await FilterConnection.exchange(
            with: endpoint, peer: peer, group: group, timeouts: timeouts, receiving: ByteBuffer.self,
            sending: ByteBuffer.self
        ) { inbound, outbound in
            var conversation = MilterConversation(
                inbound: inbound, outbound: outbound, peer: peer, limit: limit,
                verdict: FilterVerdict(filter: name))
            return try await conversation.run(message: message, envelope: envelope)
        }
    }
}

/// One message's exchange with a milter.
struct MilterConversation {
    var inbound: FilterConnection.Inbound<ByteBuffer>
    let outbound: FilterConnection.Outbound<ByteBuffer>
    let peer: String
    let limit: Int
    var verdict: FilterVerdict

    private var decoder = MilterPacketDecoder()
    private var received = 0
    private var modifications = 0
    /// What the filter said in option negotiation.
    private var version: UInt32 = 0
    private var flags: MilterProtocolFlags = []
    /// SMFIR_SKIP: leave out further events of this type.
    private var skipping: MilterCommand?
    private var quarantine: String?

    init(
        inbound: FilterConnection.Inbound<ByteBuffer>, outbound: FilterConnection.Outbound<ByteBuffer>, peer: String,
        limit: Int, verdict: FilterVerdict
    ) {
        self.inbound = inbound
        self.outbound = outbound
        self.peer = peer
        self.limit = limit
        self.verdict = verdict
    }

    /// A filter's answer to one step.
    enum Decision: Equatable {
        case `continue`
        case accept
        case reject(SMTPReply)
        case tempfail(SMTPReply)
        case discard
        case skip
    }

    mutating func run(message: ByteBuffer, envelope: FilterEnvelope) async throws -> FilterVerdict {
        try await negotiate()
        if let final = try await replay(message: message, envelope: envelope) {
            verdict.action = final
        }
        var quit = ByteBuffer()
        MilterPacket.write(.quit, to: &quit)
        // The verdict is complete; a filter that has already closed loses nothing.
        try? await outbound.write(quit)
        return verdict
    }

    /// SMFIC_OPTNEG: version 6, the actions offered, the protocol flags offered; the filter
    /// answers with its version (2 to 6), the actions it needs (a subset) and its flags.
    private mutating func negotiate() async throws {
        var packet = ByteBuffer()
        MilterPacket.optionNegotiation(
            version: MilterFilter.version, actions: .offered, flags: .offered, to: &packet)
        try await outbound.write(packet)
        guard case .optionNegotiation(let version, let actions, let flags) = try await nextResponse() else {
            throw FilterError.negotiationFailed("\(peer): the milter did not answer the option negotiation")
        }
        guard (2...MilterFilter.version).contains(version) else {
            throw FilterError.negotiationFailed(
                "\(peer): milter protocol version \(version), this client speaks 2 to 6")
        }
        let missing = actions.subtracting(.offered)
        guard missing.isEmpty else {
            throw FilterError.negotiationFailed(
                "\(peer): the milter needs actions this client does not offer: \(missing.names)")
        }
        self.version = version
        self.flags = flags.intersection(.offered)
    }

    /// Replays the transaction; returns the final action, nil when every step continued and
    /// the end of the message gave none (cannot happen: it always decides).
    private mutating func replay(message: ByteBuffer, envelope: FilterEnvelope) async throws -> FilterAction? {
        let hostname =
            envelope.clientAddress == nil ? "localhost" : envelope.clientName ?? "[\(envelope.clientAddressText!)]"
        var connectMacros = [("j", envelope.hostname), ("{daemon_name}", envelope.hostname), ("v", "Tern")]
        if let address = envelope.clientAddressText {
            connectMacros += [
                ("_", "\(envelope.clientName ?? "unknown") [\(address)]"), ("{client_addr}", address),
                ("{client_name}", envelope.clientName ?? "unknown"),
            ]
        } else {
            connectMacros.append(("_", "localhost"))
        }
        var decision = try await event(.connect, macros: connectMacros) { buffer in
            MilterPacket.connect(
                hostname: hostname, address: envelope.clientAddress, port: envelope.clientPort ?? 0, to: &buffer)
        }
        if let final = sessionDecision(decision, step: "connect") { return final }
        if let helo = envelope.helo {
            decision = try await event(.helo, macros: []) { MilterPacket.strings(.helo, [Array(helo.utf8)], to: &$0) }
            if let final = sessionDecision(decision, step: "helo") { return final }
        }

        let queueID = ("i", envelope.queueID)
        var mailMacros = [queueID, ("{mail_addr}", envelope.sender)]
        if let user = envelope.authenticatedUser { mailMacros.append(("{auth_authen}", user)) }
        decision = try await event(.mail, macros: mailMacros) {
            MilterPacket.strings(.mail, [Array("<\(envelope.sender)>".utf8)], to: &$0)
        }
        if let final = messageDecision(decision) { return final }

        var refusals: [SMTPReply] = []
        for recipient in envelope.recipients {
            decision = try await event(.recipient, macros: [queueID, ("{rcpt_addr}", recipient)]) {
                MilterPacket.strings(.recipient, [Array("<\(recipient)>".utf8)], to: &$0)
            }
            switch decision {
            case .reject(let reply), .tempfail(let reply):
                // At RCPT a refusal is the recipient's, not the message's.
                verdict.recipientRejections.append(RecipientRejection(recipient: recipient, reply: reply))
                refusals.append(reply)
            default:
                if let final = messageDecision(decision) { return final }
            }
        }
        if !envelope.recipients.isEmpty, refusals.count == envelope.recipients.count {
            // Every recipient refused: the message has nowhere to go. A temporary refusal
            // among them defers it, so that the mail is not lost.
            let reply = refusals.first(where: \.isTransientFailure) ?? refusals[0]
            return reply.isTransientFailure ? .tempfail(reply) : .reject(reply)
        }

        // SMFIC_DATA exists from protocol version 4 on.
        if version >= 4 {
            decision = try await event(.data, macros: [queueID]) { MilterPacket.write(.data, to: &$0) }
            if let final = messageDecision(decision) { return final }
        }

        let section = MessageHeaderSection(message)
        let leadingSpace = flags.contains(.headerLeadingSpace)
        for field in section.fields {
            let value = Self.headerValue(field.value, leadingSpace: leadingSpace)
            decision = try await event(.header, macros: [queueID]) {
                MilterPacket.strings(.header, [field.name, value], to: &$0)
            }
            if decision == .skip { break }
            if let final = messageDecision(decision) { return final }
        }
        decision = try await event(.endOfHeaders, macros: [queueID]) { MilterPacket.write(.endOfHeaders, to: &$0) }
        if let final = messageDecision(decision) { return final }

        var body = message.getSlice(
            at: message.readerIndex + section.bodyOffset, length: message.readableBytes - section.bodyOffset)!
        while body.readableBytes > 0 {
            let chunk = body.readSlice(length: min(body.readableBytes, MilterFilter.chunkSize))!
            decision = try await event(.body, macros: [queueID]) { buffer in
                MilterPacket.write(.body, to: &buffer) { data in data.writeImmutableBuffer(chunk) }
            }
            if decision == .skip {
                verdict.notes.append("milter skipped the rest of the body")
                break
            }
            if let final = messageDecision(decision) { return final }
        }

        // The end of the message always gets an answer, after any modifications.
        decision = try await event(.endOfBody, macros: [queueID]) { MilterPacket.write(.endOfBody, to: &$0) }
        return messageDecision(decision) ?? quarantine.map { FilterAction.quarantine(reason: $0) } ?? .accept
    }

    /// A field's value as Sendmail sends it: without the one space (not a tab) after the colon
    /// unless the filter asked to keep it (SMFIP_HDR_LEADSPC), folded lines joined by LF.
    static func headerValue(_ value: [UInt8], leadingSpace: Bool) -> [UInt8] {
        var rest = value[...]
        if !leadingSpace, rest.first == 32 { rest = rest.dropFirst() }
        var result: [UInt8] = []
        result.reserveCapacity(rest.count)
        while let byte = rest.popFirst() {
            if byte == 13, rest.first == 10 { continue }
            result.append(byte)
        }
        return result
    }

    /// A decision at connect or HELO: discard means nothing there (Postfix ignores it).
    private mutating func sessionDecision(_ decision: Decision, step: String) -> FilterAction? {
        if decision == .discard {
            verdict.notes.append("milter discard at \(step) ignored")
            return nil
        }
        return messageDecision(decision)
    }

    /// The action a decision ends the conversation with; nil to go on.
    private func messageDecision(_ decision: Decision) -> FilterAction? {
        switch decision {
        case .continue, .skip: nil
        case .accept: quarantine.map { FilterAction.quarantine(reason: $0) } ?? .accept
        case .reject(let reply): .reject(reply)
        case .tempfail(let reply): .tempfail(reply)
        case .discard: .discard
        }
    }

    /// Sends one step with its macros and returns the filter's decision: `continue` when the
    /// filter declined the step or waived its reply. Macros go even for a declined step, as
    /// Postfix sends them, so that later steps see them.
    private mutating func event(
        _ command: MilterCommand, macros: [(String, String)], packet: (inout ByteBuffer) -> Void
    ) async throws -> Decision {
        if let skipping {
            if skipping == command { return .continue }
            self.skipping = nil
        }
        var buffer = ByteBuffer()
        if !macros.isEmpty { MilterPacket.macros(for: command, macros, to: &buffer) }
        let (declined, noReply) = MilterProtocolFlags.flags(for: command)
        let sendsEvent = declined.isEmpty || !flags.contains(declined)
        if sendsEvent { packet(&buffer) }
        if buffer.readableBytes > 0 { try await outbound.write(buffer) }
        guard sendsEvent, noReply.isEmpty || !flags.contains(noReply) else { return .continue }
        return try await decision(after: command)
    }

    /// Reads responses up to the one that decides `command`: progress and quarantine come
    /// before it, and after the end of the message so do the modifications.
    private mutating func decision(after command: MilterCommand) async throws -> Decision {
        while true {
            let response = try await nextResponse()
            switch response {
            case .progress:
                continue
            case .continue:
                return .continue
            case .accept:
                return .accept
            case .discard:
                return .discard
            case .skip:
                skipping = command
                return .skip
            case .reject:
                return .reject(SMTPReply(550, EnhancedStatusCode(5, 7, 1), "Command rejected"))
            case .tempfail:
                return .tempfail(SMTPReply(451, EnhancedStatusCode(4, 7, 1), "Service unavailable - try again later"))
            case .shutdown:
                return .tempfail(
                    SMTPReply(421, EnhancedStatusCode(4, 7, 0), "Service unavailable - closing connection"))
            case .replyCode(let text):
                let reply = try Self.reply(text, peer: peer)
                return reply.isTransientFailure ? .tempfail(reply) : .reject(reply)
            case .quarantine(let reason):
                quarantine = reason.isEmpty ? "milter" : reason
            case .optionNegotiation:
                throw FilterError.malformedReply("\(peer): option negotiation answer after \(command.name)")
            default:
                guard command == .endOfBody else {
                    throw FilterError.malformedReply("\(peer): modification request after \(command.name)")
                }
                try record(response)
            }
        }
    }

    /// A modification request at the end of the message.
    private mutating func record(_ response: MilterResponse) throws {
        modifications += 1
        guard modifications <= MilterFilter.maximumModifications else {
            throw FilterError.replyTooLarge(
                "\(peer): more than \(MilterFilter.maximumModifications) modification requests")
        }
        switch response {
        case .addHeader(let name, let value):
            verdict.headersToAdd.append(try FilterHeaderField.validated(name: name, value: value, from: peer))
        case .insertHeader(let index, let name, let value):
            let field = try FilterHeaderField.validated(name: name, value: value, from: peer)
            verdict.headerChanges.append(.insert(field, at: Int(index)))
        case .changeHeader(let index, let name, let value):
            // Index 0 means the first, as in Sendmail; an empty value deletes.
            let instance = max(1, Int(index))
            let field = try FilterHeaderField.validated(name: name, value: value, from: peer)
            verdict.headerChanges.append(
                field.value.isEmpty
                    ? .delete(name: field.name, instance: instance) : .replace(field, instance: instance))
        case .addRecipient(let address, let parameters):
            verdict.envelopeChanges.append(.addRecipient(address, parameters: parameters))
        case .deleteRecipient(let address):
            verdict.envelopeChanges.append(.deleteRecipient(address))
        case .changeSender(let address, let parameters):
            verdict.envelopeChanges.append(.changeSender(address, parameters: parameters))
        case .replaceBody(let chunk):
            var body = verdict.replacementBody ?? ByteBuffer()
            body.writeImmutableBuffer(chunk)
            verdict.replacementBody = body
        default:
            break  // Decisions are handled by the caller.
        }
    }

    /// SMFIR_REPLYCODE's text as a reply: `4xx` or `5xx`, a space or `-`, an enhanced code of
    /// the same class if any; `%%` stands for `%` (Sendmail uses the text as a format). Without
    /// an enhanced code, x.7.1 (policy refusal) is supplied, as every reply after EHLO has one.
    static func reply(_ text: String, peer: String) throws(FilterError) -> SMTPReply {
        let malformed = FilterError.malformedReply(
            "\(peer): malformed reply code \(String(text.prefix(80)).debugDescription)")
        let bytes = Array(text.utf8)
        guard bytes.count >= 3, bytes[0] == UInt8(ascii: "4") || bytes[0] == UInt8(ascii: "5"),
            bytes[1...2].allSatisfy({ (48...57).contains($0) }),
            bytes.count == 3 || bytes[3] == UInt8(ascii: " ") || bytes[3] == UInt8(ascii: "-")
        else { throw malformed }
        var parser = SMTPReplyParser()
        parser.append(ByteBuffer(string: text.unescapingPercent() + "\r\n"))
        guard let parsed = try? parser.nextReply(), parser.isEmpty else { throw malformed }
        var reply = parsed
        if reply.enhanced == nil { reply.enhanced = EnhancedStatusCode(reply.code / 100, 7, 1) }
        return reply
    }

    private mutating func nextResponse() async throws -> MilterResponse {
        while true {
            if let (code, data) = try decoder.next(peer: peer) {
                return try MilterResponse.decode(code: code, data: data, peer: peer)
            }
            guard let chunk = try await inbound.next() else {
                throw FilterError.connectionClosed("\(peer): the milter closed the connection")
            }
            received += chunk.readableBytes
            guard received <= limit else {
                throw FilterError.replyTooLarge("\(peer): the milter sent more than \(limit) bytes")
            }
            decoder.append(chunk)
        }
    }
}

extension String {
    /// `%%` → `%`, a lone `%` dropped (Postfix's reading of Sendmail's format strings).
    fileprivate func unescapingPercent() -> String {
        var result = ""
        var iterator = makeIterator()
        while let character = iterator.next() {
            if character == "%" {
                if let next = iterator.next() { result.append(next) }
            } else {
                result.append(character)
            }
        }
        return result
    }
}
