import Foundation
import NIOConcurrencyHelpers
import NIOCore
import SMTPProtocol
import Testing

@testable import MailPolicy

/// A packet as the fake milter sees or sends it: command byte and data.
struct MilterTestPacket: Sendable, Hashable, CustomStringConvertible {
    var code: UInt8
    var data: [UInt8]

    init(_ code: Character, _ data: [UInt8] = []) {
        self.code = code.asciiValue!
        self.data = data
    }

    init(code: UInt8, data: [UInt8]) {
        self.code = code
        self.data = data
    }

    var character: Character { Character(Unicode.Scalar(code)) }
    var description: String { "\(character)\(String(decoding: data, as: UTF8.self).debugDescription)" }

    /// NUL-terminated strings.
    static func strings(_ strings: String...) -> [UInt8] { strings.flatMap { Array($0.utf8) + [0] } }
    static func number(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * $0)) } }

    static let `continue` = MilterTestPacket("c")
    static func addHeader(_ name: String, _ value: String) -> MilterTestPacket {
        MilterTestPacket("h", strings(name, value))
    }
    static func reply(_ text: String) -> MilterTestPacket { MilterTestPacket("y", strings(text)) }
}

/// A milter written against the protocol description, not the client's code: it answers
/// option negotiation with `version`, `actions` and `flags`, never answers macros, abort or
/// quit, and answers every other packet with what `respond` returns (nothing for a step whose
/// reply it waived). It records every packet it receives.
struct FakeMilter {
    let server: FakeFilterServer<ByteBuffer, ByteBuffer>
    let received: NIOLockedValueBox<[MilterTestPacket]>

    var endpoint: FilterEndpoint { server.endpoint }
    /// The packets received; the client's final QUIT may still be on its way when the check
    /// returns, so this waits a moment for it.
    var packets: [MilterTestPacket] {
        get async {
            for _ in 0..<200 where received.withLockedValue({ $0.last?.character != "Q" }) {
                try? await Task.sleep(for: .milliseconds(10))
            }
            return received.withLockedValue { $0 }
        }
    }
    /// The command letters received, macros shown as `D` followed by the step they precede.
    var codes: String {
        get async {
            await packets.map {
                $0.code == UInt8(ascii: "D") ? "D\(Character(Unicode.Scalar($0.data[0])))" : "\($0.character)"
            }
            .joined(separator: " ")
        }
    }
    func packets(_ code: Character) async -> [MilterTestPacket] { await packets.filter { $0.character == code } }

    static func start(
        version: UInt32 = 6, actions: UInt32 = 0x3F, flags: UInt32 = 0, unixPath: String? = nil,
        respond: @escaping @Sendable (MilterTestPacket) -> [MilterTestPacket] = { _ in [.continue] }
    ) async throws -> FakeMilter {
        let received = NIOLockedValueBox<[MilterTestPacket]>([])
        let server = try await FakeFilterServer<ByteBuffer, ByteBuffer>.start(unixPath: unixPath) { inbound, outbound in
            var buffer = ByteBuffer()
            while true {
                while buffer.readableBytes < 4
                    || buffer.readableBytes < 4 + Int(buffer.getInteger(at: buffer.readerIndex, as: UInt32.self)!)
                {
                    guard var chunk = try await inbound.next() else { return }
                    buffer.writeBuffer(&chunk)
                }
                let length = Int(buffer.readInteger(as: UInt32.self)!)
                let code = buffer.readInteger(as: UInt8.self)!
                let packet = MilterTestPacket(code: code, data: buffer.readBytes(length: length - 1)!)
                received.withLockedValue { $0.append(packet) }
                let answers: [MilterTestPacket]
                switch packet.character {
                case "O":
                    answers = [
                        MilterTestPacket(
                            "O",
                            MilterTestPacket.number(version) + MilterTestPacket.number(actions)
                                + MilterTestPacket.number(flags))
                    ]
                case "D", "A": answers = []
                case "Q": return
                default: answers = respond(packet)
                }
                var out = ByteBuffer()
                for answer in answers {
                    out.writeInteger(UInt32(answer.data.count + 1))
                    out.writeInteger(answer.code)
                    out.writeBytes(answer.data)
                }
                if out.readableBytes > 0 { try await outbound.write(out) }
            }
        }
        return FakeMilter(server: server, received: received)
    }
}

private let quickly = FilterTimeouts(connect: .seconds(5), total: .seconds(10))

@Suite struct MilterFilterTests {
    // MARK: Packets

    @Test(arguments: [
        (MilterTestPacket("a"), MilterResponse.accept),
        (MilterTestPacket("c"), .continue),
        (MilterTestPacket("d"), .discard),
        (MilterTestPacket("r"), .reject),
        (MilterTestPacket("t"), .tempfail),
        (MilterTestPacket("s"), .skip),
        (MilterTestPacket("p"), .progress),
        (MilterTestPacket("4"), .shutdown),
        (MilterTestPacket("f"), .shutdown),
        (MilterTestPacket("y", MilterTestPacket.strings("554 5.7.1 No")), .replyCode("554 5.7.1 No")),
        (MilterTestPacket("y", Array("451 later".utf8)), .replyCode("451 later")),
        (MilterTestPacket("q", MilterTestPacket.strings("virus")), .quarantine(reason: "virus")),
        (
            MilterTestPacket("h", MilterTestPacket.strings("X-A", "1")),
            .addHeader(name: Array("X-A".utf8), value: Array("1".utf8))
        ),
        (
            MilterTestPacket("i", MilterTestPacket.number(3) + MilterTestPacket.strings("X-B", "2")),
            .insertHeader(index: 3, name: Array("X-B".utf8), value: Array("2".utf8))
        ),
        (
            MilterTestPacket("m", MilterTestPacket.number(1) + MilterTestPacket.strings("Subject", "")),
            .changeHeader(index: 1, name: Array("Subject".utf8), value: [])
        ),
        (MilterTestPacket("+", MilterTestPacket.strings("<x@y>")), .addRecipient("<x@y>", parameters: nil)),
        (
            MilterTestPacket("2", MilterTestPacket.strings("<x@y>", "NOTIFY=NEVER")),
            .addRecipient("<x@y>", parameters: "NOTIFY=NEVER")
        ),
        (MilterTestPacket("-", MilterTestPacket.strings("<x@y>")), .deleteRecipient("<x@y>")),
        (MilterTestPacket("e", MilterTestPacket.strings("<s@y>")), .changeSender("<s@y>", parameters: nil)),
        (MilterTestPacket("b", Array("new body".utf8)), .replaceBody(ByteBuffer(string: "new body"))),
        (
            MilterTestPacket(
                "O", MilterTestPacket.number(6) + MilterTestPacket.number(1) + MilterTestPacket.number(0x40)),
            .optionNegotiation(version: 6, actions: .addHeaders, flags: .noEndOfHeaders)
        ),
    ])
    func responsesDecode(packet: MilterTestPacket, expected: MilterResponse) throws {
        #expect(
            try MilterResponse.decode(code: packet.code, data: ByteBuffer(bytes: packet.data), peer: "m") == expected)
    }

    @Test(arguments: [
        MilterTestPacket("a", [0]),  // data after a decision
        MilterTestPacket("h", Array("X-A".utf8)),  // no NUL
        MilterTestPacket("h", MilterTestPacket.strings("X-A")),  // no value
        MilterTestPacket("h", MilterTestPacket.strings("X-A", "1", "extra")),
        MilterTestPacket("m", [0, 0, 1]),  // short index
        MilterTestPacket("O", [0, 0, 0, 6]),
        MilterTestPacket("Z"),
        // SETSYMLIST, never offered.
        MilterTestPacket("l", MilterTestPacket.number(0) + MilterTestPacket.strings("{x}")),
    ])
    func malformedResponses(packet: MilterTestPacket) {
        #expect(throws: FilterError.self) {
            try MilterResponse.decode(code: packet.code, data: ByteBuffer(bytes: packet.data), peer: "m")
        }
    }

    @Test func decoderCutsPacketsWhateverTheReads() throws {
        var stream = ByteBuffer()
        for packet in [MilterTestPacket("p"), .addHeader("X-A", "1"), .continue] {
            stream.writeInteger(UInt32(packet.data.count + 1))
            stream.writeInteger(packet.code)
            stream.writeBytes(packet.data)
        }
        for split in 0...stream.readableBytes {
            var decoder = MilterPacketDecoder()
            var codes: [UInt8] = []
            decoder.append(stream.getSlice(at: 0, length: split)!)
            while let packet = try decoder.next(peer: "m") { codes.append(packet.code) }
            decoder.append(stream.getSlice(at: split, length: stream.readableBytes - split)!)
            while let packet = try decoder.next(peer: "m") { codes.append(packet.code) }
            #expect(codes == Array("phc".utf8))
        }
    }

    @Test func decoderRefusesBadLengths() {
        var zero = MilterPacketDecoder()
        zero.append(ByteBuffer(bytes: [0, 0, 0, 0, 0x63]))
        #expect(throws: FilterError.self) { try zero.next(peer: "m") }
        var huge = MilterPacketDecoder()
        huge.append(ByteBuffer(bytes: [0x7F, 0xFF, 0xFF, 0xFF]))
        #expect(throws: FilterError.self) { try huge.next(peer: "m") }
    }

    @Test(arguments: [
        ("554 5.7.1 Go away", SMTPReply(554, EnhancedStatusCode(5, 7, 1), "Go away")),
        ("451 4.7.1 Later", SMTPReply(451, EnhancedStatusCode(4, 7, 1), "Later")),
        ("550 No such user", SMTPReply(550, EnhancedStatusCode(5, 7, 1), "No such user")),
        ("550 5.1.1 100%% sure", SMTPReply(550, EnhancedStatusCode(5, 1, 1), "100% sure")),
        (
            "554-5.7.1 first\r\n554 5.7.1 second",
            SMTPReply(554, EnhancedStatusCode(5, 7, 1), lines: ["first", "second"])
        ),
    ])
    func replyCodesParse(text: String, expected: SMTPReply) throws {
        #expect(try MilterConversation.reply(text, peer: "m") == expected)
    }

    @Test(arguments: ["250 2.0.0 Ok", "5", "55x No", "554X", "", "554 5.7.1 a\r\n550 b", "554 a\r\n"])
    func badReplyCodes(text: String) {
        #expect(throws: FilterError.self) { try MilterConversation.reply(text, peer: "m") }
    }

    @Test func headerValuesAsSendmailSendsThem() {
        let folded = Array(" first\r\n\tsecond".utf8)
        #expect(MilterConversation.headerValue(folded, leadingSpace: false) == Array("first\n\tsecond".utf8))
        #expect(MilterConversation.headerValue(folded, leadingSpace: true) == Array(" first\n\tsecond".utf8))
        #expect(MilterConversation.headerValue(Array("\tx".utf8), leadingSpace: false) == Array("\tx".utf8))
    }

    // MARK: Conversations

    @Test func replaysTheTransaction() async throws {
        let milter = try await FakeMilter.start { packet in
            packet.character == "E" ? [.addHeader("X-Milter", "checked"), .continue] : [.continue]
        }
        defer { milter.server.stop() }
        let verdict = try await MilterFilter(endpoint: milter.endpoint, timeouts: quickly).check(
            sampleMessage, envelope: sampleEnvelope)
        #expect(verdict.action == .accept)
        #expect(verdict.headersToAdd == [FilterHeaderField(name: "X-Milter", value: "checked")])
        #expect(
            await milter.codes
                == "O DC C H DM M DR R DR R DT T DL L DL L DL L DL L DL L DN N DB B DE E Q")

        let packets = await milter.packets
        #expect(
            packets[0].data == MilterTestPacket.number(6) + MilterTestPacket.number(0xFF)
                + MilterTestPacket.number(0x1F_FFFF))
        #expect(
            packets[1].data
                == [UInt8(ascii: "C")]
                + MilterTestPacket.strings(
                    "j", "mx.example.test", "{daemon_name}", "mx.example.test", "v", "Tern", "_",
                    "mail.sender.test [192.0.2.7]", "{client_addr}", "192.0.2.7", "{client_name}", "mail.sender.test"))
        #expect(
            packets[2].data == MilterTestPacket.strings("mail.sender.test") + [UInt8(ascii: "4"), 0x9C, 0xBB]
                + MilterTestPacket.strings("192.0.2.7"))
        #expect(packets[3].data == MilterTestPacket.strings("mail.sender.test"))
        #expect(
            packets[4].data == [UInt8(ascii: "M")]
                + MilterTestPacket.strings("i", "4Q2X7A1B", "{mail_addr}", "alice@sender.test"))
        #expect(await milter.packets("M")[0].data == MilterTestPacket.strings("<alice@sender.test>"))
        #expect(
            await milter.packets("R").map(\.data) == [
                MilterTestPacket.strings("<bob@example.test>"), MilterTestPacket.strings("<carol@example.test>"),
            ])
        #expect(
            packets[6].data == [UInt8(ascii: "R")]
                + MilterTestPacket.strings("i", "4Q2X7A1B", "{rcpt_addr}", "bob@example.test"))
        let headers = await milter.packets("L").map(\.data)
        #expect(headers.count == 5)
        #expect(
            headers[0]
                == MilterTestPacket.strings(
                    "Received", "from mail.sender.test\n\tby mx.example.test; Mon, 23 Nov 2026 10:00:00 +0000"))
        #expect(headers[3] == MilterTestPacket.strings("Subject", "Lunch"))
        #expect(await milter.packets("B").map(\.data) == [Array("Hi Bob,\r\nlunch tomorrow?\r\n".utf8)])
        #expect(await milter.packets("E")[0].data.isEmpty)
    }

    @Test func replyCodeAtTheEndRejects() async throws {
        let milter = try await FakeMilter.start { packet in
            packet.character == "E" ? [.reply("554 5.7.1 Message refused (100%%)")] : [.continue]
        }
        defer { milter.server.stop() }
        let verdict = try await MilterFilter(endpoint: milter.endpoint, timeouts: quickly).check(
            sampleMessage, envelope: sampleEnvelope)
        #expect(verdict.action == .reject(SMTPReply(554, EnhancedStatusCode(5, 7, 1), "Message refused (100%)")))
    }

    @Test func tempfailAtMailEndsTheConversation() async throws {
        let milter = try await FakeMilter.start { packet in
            packet.character == "M" ? [MilterTestPacket("t")] : [.continue]
        }
        defer { milter.server.stop() }
        let verdict = try await MilterFilter(endpoint: milter.endpoint, timeouts: quickly).check(
            sampleMessage, envelope: sampleEnvelope)
        #expect(
            verdict.action
                == .tempfail(SMTPReply(451, EnhancedStatusCode(4, 7, 1), "Service unavailable - try again later")))
        #expect(await milter.codes == "O DC C H DM M Q")
    }

    @Test func modificationsAndQuarantine() async throws {
        let milter = try await FakeMilter.start(actions: 0xFF) { packet in
            guard packet.character == "E" else { return [.continue] }
            return [
                MilterTestPacket("p"),
                MilterTestPacket("q", MilterTestPacket.strings("looks odd")),
                MilterTestPacket("i", MilterTestPacket.number(0) + MilterTestPacket.strings("X-First", "1")),
                MilterTestPacket(
                    "m", MilterTestPacket.number(1) + MilterTestPacket.strings("Subject", "[tagged] Lunch")),
                MilterTestPacket("m", MilterTestPacket.number(0) + MilterTestPacket.strings("Received", "")),
                .addHeader("X-Multi", "a\n\tb"),
                MilterTestPacket("+", MilterTestPacket.strings("<archive@example.test>")),
                MilterTestPacket("2", MilterTestPacket.strings("<audit@example.test>", "NOTIFY=NEVER")),
                MilterTestPacket("-", MilterTestPacket.strings("<carol@example.test>")),
                MilterTestPacket("e", MilterTestPacket.strings("<bounce@example.test>", "SIZE=100")),
                MilterTestPacket("b", Array("New ".utf8)),
                MilterTestPacket("b", Array("body\r\n".utf8)),
                .continue,
            ]
        }
        defer { milter.server.stop() }
        let verdict = try await MilterFilter(endpoint: milter.endpoint, timeouts: quickly).check(
            sampleMessage, envelope: sampleEnvelope)
        #expect(verdict.action == .quarantine(reason: "looks odd"))
        #expect(verdict.headersToAdd == [FilterHeaderField(name: "X-Multi", value: "a\r\n\tb")])
        #expect(
            verdict.headerChanges == [
                .insert(FilterHeaderField(name: "X-First", value: "1"), at: 0),
                .replace(FilterHeaderField(name: "Subject", value: "[tagged] Lunch"), instance: 1),
                .delete(name: "Received", instance: 1),
            ])
        #expect(
            verdict.envelopeChanges == [
                .addRecipient("<archive@example.test>", parameters: nil),
                .addRecipient("<audit@example.test>", parameters: "NOTIFY=NEVER"),
                .deleteRecipient("<carol@example.test>"),
                .changeSender("<bounce@example.test>", parameters: "SIZE=100"),
            ])
        #expect(verdict.replacementBody == ByteBuffer(string: "New body\r\n"))
    }

    /// A filter that declines steps and waives replies gets neither the steps nor a wait for
    /// the replies (it never sends them: waiting would run into the time limit); macros still
    /// come, as Postfix sends them.
    @Test func declinedStepsAreLeftOut() async throws {
        let flags: MilterProtocolFlags = [
            .noConnect, .noHelo, .noHeaders, .noEndOfHeaders, .noRecipientReply, .noDataReply, .noBodyReply,
        ]
        let milter = try await FakeMilter.start(flags: flags.rawValue) { packet in
            "RTB".contains(packet.character) ? [] : [.continue]
        }
        defer { milter.server.stop() }
        let verdict = try await MilterFilter(endpoint: milter.endpoint, timeouts: quickly).check(
            sampleMessage, envelope: sampleEnvelope)
        #expect(verdict.action == .accept)
        #expect(await milter.codes == "O DC DM M DR R DR R DT T DL DL DL DL DL DN DB B DE E Q")
    }

    @Test func olderProtocolGetsNoData() async throws {
        let flags: MilterProtocolFlags = [.noBody, .noHeaders]
        let milter = try await FakeMilter.start(version: 2, flags: flags.rawValue)
        defer { milter.server.stop() }
        _ = try await MilterFilter(endpoint: milter.endpoint, timeouts: quickly).check(
            sampleMessage, envelope: sampleEnvelope)
        #expect(await milter.codes == "O DC C H DM M DR R DR R DL DL DL DL DL DN N DB DE E Q")
    }

    @Test func recipientRefusals() async throws {
        let one = try await FakeMilter.start { packet in
            packet == MilterTestPacket("R", MilterTestPacket.strings("<bob@example.test>"))
                ? [.reply("550 5.1.1 No such user")] : [.continue]
        }
        defer { one.server.stop() }
        let verdict = try await MilterFilter(endpoint: one.endpoint, timeouts: quickly).check(
            sampleMessage, envelope: sampleEnvelope)
        #expect(verdict.action == .accept)
        #expect(
            verdict.recipientRejections == [
                RecipientRejection(
                    recipient: "bob@example.test", reply: SMTPReply(550, EnhancedStatusCode(5, 1, 1), "No such user"))
            ])
        #expect(await one.codes.contains("DT T"))

        // Everyone refused: the message is refused, temporarily when one refusal was.
        let all = try await FakeMilter.start { packet in
            guard packet.character == "R" else { return [.continue] }
            return packet.data == MilterTestPacket.strings("<bob@example.test>")
                ? [.reply("550 5.1.1 No")] : [MilterTestPacket("t")]
        }
        defer { all.server.stop() }
        let refused = try await MilterFilter(endpoint: all.endpoint, timeouts: quickly).check(
            sampleMessage, envelope: sampleEnvelope)
        #expect(
            refused.action
                == .tempfail(SMTPReply(451, EnhancedStatusCode(4, 7, 1), "Service unavailable - try again later")))
        #expect(refused.recipientRejections.count == 2)
        #expect(await all.codes == "O DC C H DM M DR R DR R Q")
    }

    @Test func acceptAtRecipientAcceptsTheMessage() async throws {
        let milter = try await FakeMilter.start { packet in
            packet.character == "R" ? [MilterTestPacket("a")] : [.continue]
        }
        defer { milter.server.stop() }
        let verdict = try await MilterFilter(endpoint: milter.endpoint, timeouts: quickly).check(
            sampleMessage, envelope: sampleEnvelope)
        #expect(verdict.action == .accept)
        #expect(await milter.codes == "O DC C H DM M DR R Q")
    }

    @Test func discardAtConnectIsIgnoredAndAtTheEndDiscards() async throws {
        let milter = try await FakeMilter.start { packet in
            "CE".contains(packet.character) ? [MilterTestPacket("d")] : [.continue]
        }
        defer { milter.server.stop() }
        let verdict = try await MilterFilter(endpoint: milter.endpoint, timeouts: quickly).check(
            sampleMessage, envelope: sampleEnvelope)
        #expect(verdict.action == .discard)
        #expect(verdict.notes == ["milter discard at connect ignored"])
    }

    @Test func shutdownIsA421() async throws {
        let milter = try await FakeMilter.start { packet in
            packet.character == "H" ? [MilterTestPacket("4")] : [.continue]
        }
        defer { milter.server.stop() }
        let verdict = try await MilterFilter(endpoint: milter.endpoint, timeouts: quickly).check(
            sampleMessage, envelope: sampleEnvelope)
        guard case .tempfail(let reply) = verdict.action else {
            Issue.record("not a tempfail: \(verdict.action)")
            return
        }
        #expect(reply.code == 421)
    }

    @Test func largeBodyGoesInChunks() async throws {
        let milter = try await FakeMilter.start()
        defer { milter.server.stop() }
        var message = ByteBuffer(string: "Subject: big\r\n\r\n")
        let line = String(repeating: "0123456789", count: 7) + "\r\n"
        for _ in 0..<2800 { message.writeString(line) }
        let bodyLength = message.readableBytes - 16
        _ = try await MilterFilter(endpoint: milter.endpoint, timeouts: quickly).check(
            message, envelope: sampleEnvelope)
        let chunks = await milter.packets("B").map(\.data)
        #expect(chunks.map(\.count) == [65535, 65535, 65535, bodyLength - 3 * 65535])
        #expect(chunks.flatMap { $0 } == Array(message.readableBytesView.dropFirst(16)))
    }

    @Test func skipEndsTheBody() async throws {
        let milter = try await FakeMilter.start { packet in
            packet.character == "B" ? [MilterTestPacket("s")] : [.continue]
        }
        defer { milter.server.stop() }
        var message = ByteBuffer(string: "Subject: big\r\n\r\n")
        message.writeRepeatingByte(UInt8(ascii: "x"), count: 200_000)
        let verdict = try await MilterFilter(endpoint: milter.endpoint, timeouts: quickly).check(
            message, envelope: sampleEnvelope)
        #expect(await milter.packets("B").count == 1)
        #expect(verdict.action == .accept && verdict.notes == ["milter skipped the rest of the body"])
    }

    @Test(arguments: [
        // The milter needs an action not offered.
        (UInt32(6), UInt32(0x100)),
        // A protocol version this client does not know.
        (UInt32(7), UInt32(0x1)),
        (UInt32(1), UInt32(0x1)),
    ])
    func negotiationFailures(version: UInt32, actions: UInt32) async throws {
        let milter = try await FakeMilter.start(version: version, actions: actions)
        defer { milter.server.stop() }
        await #expect {
            _ = try await MilterFilter(endpoint: milter.endpoint, timeouts: quickly).check(
                sampleMessage, envelope: sampleEnvelope)
        } throws: { error in
            guard case .negotiationFailed = error as? FilterError else { return false }
            return true
        }
    }

    @Test func modificationBeforeTheEndIsMalformed() async throws {
        let milter = try await FakeMilter.start { packet in
            packet.character == "M" ? [.addHeader("X-A", "1")] : [.continue]
        }
        defer { milter.server.stop() }
        await #expect {
            _ = try await MilterFilter(endpoint: milter.endpoint, timeouts: quickly).check(
                sampleMessage, envelope: sampleEnvelope)
        } throws: { error in
            guard case .malformedReply = error as? FilterError else { return false }
            return true
        }
    }

    @Test func floodOfProgressIsBounded() async throws {
        let milter = try await FakeMilter.start { packet in
            packet.character == "E" ? Array(repeating: MilterTestPacket("p"), count: 50_000) : [.continue]
        }
        defer { milter.server.stop() }
        await #expect {
            _ = try await MilterFilter(endpoint: milter.endpoint, timeouts: quickly, maximumReplySize: 100_000).check(
                sampleMessage, envelope: sampleEnvelope)
        } throws: { error in
            guard case .replyTooLarge = error as? FilterError else { return false }
            return true
        }
    }

    @Test func closingMidConversationIsConnectionClosed() async throws {
        let server = try await FakeFilterServer<ByteBuffer, ByteBuffer>.start { inbound, outbound in
            _ = try await read(&inbound, count: 17)
            var reply = ByteBuffer()
            reply.writeBytes([0, 0, 0, 13, UInt8(ascii: "O"), 0, 0, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0])
            try await outbound.write(reply)
            _ = try await inbound.next()
        }
        defer { server.stop() }
        await #expect {
            _ = try await MilterFilter(endpoint: server.endpoint, timeouts: quickly).check(
                sampleMessage, envelope: sampleEnvelope)
        } throws: { error in
            guard case .connectionClosed = error as? FilterError else { return false }
            return true
        }
    }

    @Test func localSubmissionOverUnixSocket() async throws {
        let path = temporarySocketPath("milter")
        let milter = try await FakeMilter.start(unixPath: path)
        defer {
            milter.server.stop()
            unlink(path)
        }
        var envelope = sampleEnvelope
        envelope.clientAddress = nil
        envelope.clientName = nil
        envelope.helo = nil
        envelope.sender = ""
        envelope.authenticatedUser = "alice"
        let verdict = try await MilterFilter(endpoint: .unix(path: path), timeouts: quickly).check(
            sampleMessage, envelope: envelope)
        #expect(verdict.action == .accept)
        #expect(await milter.packets("C")[0].data == MilterTestPacket.strings("localhost") + [UInt8(ascii: "U")])
        #expect(await milter.packets("H").isEmpty)
        #expect(await milter.packets("M")[0].data == MilterTestPacket.strings("<>"))
        #expect(
            await milter.packets("D")[1].data
                == [UInt8(ascii: "M")]
                + MilterTestPacket.strings("i", "4Q2X7A1B", "{mail_addr}", "", "{auth_authen}", "alice"))
    }

    // MARK: A live libmilter

    static let pymilterAvailable: Bool = {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") else { return false }
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        probe.arguments = ["-c", "import Milter"]
        probe.standardOutput = FileHandle.nullDevice
        probe.standardError = FileHandle.nullDevice
        guard (try? probe.run()) != nil else { return false }
        probe.waitUntilExit()
        return probe.terminationStatus == 0
    }()

    /// pymilter (python3-milter, libmilter underneath) as the filter: it declines most steps,
    /// adds a header at the end, and rejects on a Subject.
    @Test(.enabled(if: pymilterAvailable), .timeLimit(.minutes(1)))
    func livePymilter() async throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/filters/pymilter_peer.py")
        let probe = try await FakeFilterServer<ByteBuffer, ByteBuffer>.start { _, _ in }
        guard case .tcp(_, let port) = probe.endpoint else { return }
        probe.stop()
        try await Task.sleep(for: .milliseconds(100))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [script.path, "\(port)"]
        process.standardOutput = FileHandle.nullDevice
        let filter = MilterFilter(endpoint: .tcp(host: "127.0.0.1", port: port), timeouts: quickly, name: "pymilter")
        // SIGKILL: libmilter takes seconds to shut down on SIGTERM, and has no children.
        try await whileRunning(process, stopWith: SIGKILL) {
            let accepted = try await firstVerdict(of: filter, for: sampleMessage, attempts: 100) { process.isRunning }
            let verdict = try #require(accepted)
            #expect(verdict.action == .accept)
            #expect(
                verdict.headersToAdd == [
                    FilterHeaderField(name: "X-Pymilter", value: "rcpts=2 client=192.0.2.7 subject=Lunch")
                ])

            let rejectMe = ByteBuffer(string: "Subject: please reject me\r\nFrom: a@b.test\r\n\r\nbody\r\n")
            let refused = try await filter.check(rejectMe, envelope: sampleEnvelope)
            #expect(refused.action == .reject(SMTPReply(554, EnhancedStatusCode(5, 7, 1), "Rejected by pymilter")))
        }
    }
}
