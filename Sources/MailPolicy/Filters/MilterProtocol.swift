import NIOCore

// The Sendmail milter protocol, version 6, from the MTA's side: the packets of libmilter's
// mfdef.h as Postfix's milter8.c sends and reads them. Every packet is a 32-bit length in
// network order (counting the command byte), a command byte, and data; strings are
// NUL-terminated, numbers 32-bit network order, the port 16-bit.

/// What the MTA sends (SMFIC_*).
enum MilterCommand: UInt8, Sendable, Hashable {
    case abort = 0x41  // 'A'
    case body = 0x42  // 'B'
    case connect = 0x43  // 'C'
    case macro = 0x44  // 'D'
    case endOfBody = 0x45  // 'E'
    case helo = 0x48  // 'H'
    case header = 0x4C  // 'L'
    case mail = 0x4D  // 'M'
    case endOfHeaders = 0x4E  // 'N'
    case optionNegotiation = 0x4F  // 'O'
    case quit = 0x51  // 'Q'
    case recipient = 0x52  // 'R'
    case data = 0x54  // 'T'

    var name: String {
        switch self {
        case .abort: "abort"
        case .body: "body"
        case .connect: "connect"
        case .macro: "macro"
        case .endOfBody: "end of body"
        case .helo: "helo"
        case .header: "header"
        case .mail: "mail"
        case .endOfHeaders: "end of headers"
        case .optionNegotiation: "option negotiation"
        case .quit: "quit"
        case .recipient: "rcpt"
        case .data: "data"
        }
    }
}

/// The modifications a filter may ask for (SMFIF_*), offered by the MTA in option negotiation.
struct MilterActions: OptionSet, Sendable, Hashable {
    let rawValue: UInt32

    static let addHeaders = MilterActions(rawValue: 1 << 0)
    static let changeBody = MilterActions(rawValue: 1 << 1)
    static let addRecipients = MilterActions(rawValue: 1 << 2)
    static let deleteRecipients = MilterActions(rawValue: 1 << 3)
    static let changeHeaders = MilterActions(rawValue: 1 << 4)
    static let quarantine = MilterActions(rawValue: 1 << 5)
    static let changeSender = MilterActions(rawValue: 1 << 6)
    static let addRecipientsWithParameters = MilterActions(rawValue: 1 << 7)
    static let setSymbolList = MilterActions(rawValue: 1 << 8)

    /// Everything a verdict can carry. Not SETSYMLIST: the macros sent are fixed.
    static let offered: MilterActions = [
        .addHeaders, .changeBody, .addRecipients, .deleteRecipients, .changeHeaders, .quarantine, .changeSender,
        .addRecipientsWithParameters,
    ]

    static let names: [(MilterActions, String)] = [
        (.addHeaders, "ADDHDRS"), (.changeBody, "CHGBODY"), (.addRecipients, "ADDRCPT"), (.deleteRecipients, "DELRCPT"),
        (.changeHeaders, "CHGHDRS"), (.quarantine, "QUARANTINE"), (.changeSender, "CHGFROM"),
        (.addRecipientsWithParameters, "ADDRCPT_PAR"), (.setSymbolList, "SETSYMLIST"),
    ]

    var names: String {
        let known = Self.names.filter { contains($0.0) }.map(\.1)
        let unknown = subtracting(Self.names.reduce(into: MilterActions()) { $0.insert($1.0) })
        return (known + (unknown.isEmpty ? [] : ["0x" + String(unknown.rawValue, radix: 16)])).joined(separator: "|")
    }
}

/// Steps a filter does not want and replies it will not send (SMFIP_*), and protocol
/// features. The MTA offers all it supports; the filter answers with those it uses.
struct MilterProtocolFlags: OptionSet, Sendable, Hashable {
    let rawValue: UInt32

    static let noConnect = MilterProtocolFlags(rawValue: 1 << 0)
    static let noHelo = MilterProtocolFlags(rawValue: 1 << 1)
    static let noMail = MilterProtocolFlags(rawValue: 1 << 2)
    static let noRecipient = MilterProtocolFlags(rawValue: 1 << 3)
    static let noBody = MilterProtocolFlags(rawValue: 1 << 4)
    static let noHeaders = MilterProtocolFlags(rawValue: 1 << 5)
    static let noEndOfHeaders = MilterProtocolFlags(rawValue: 1 << 6)
    static let noHeaderReply = MilterProtocolFlags(rawValue: 1 << 7)
    static let noUnknown = MilterProtocolFlags(rawValue: 1 << 8)
    static let noData = MilterProtocolFlags(rawValue: 1 << 9)
    /// The MTA understands SMFIR_SKIP.
    static let skip = MilterProtocolFlags(rawValue: 1 << 10)
    /// The filter also wants recipients the MTA rejected (this client only has accepted ones).
    static let rejectedRecipients = MilterProtocolFlags(rawValue: 1 << 11)
    static let noConnectReply = MilterProtocolFlags(rawValue: 1 << 12)
    static let noHeloReply = MilterProtocolFlags(rawValue: 1 << 13)
    static let noMailReply = MilterProtocolFlags(rawValue: 1 << 14)
    static let noRecipientReply = MilterProtocolFlags(rawValue: 1 << 15)
    static let noDataReply = MilterProtocolFlags(rawValue: 1 << 16)
    static let noUnknownReply = MilterProtocolFlags(rawValue: 1 << 17)
    static let noEndOfHeadersReply = MilterProtocolFlags(rawValue: 1 << 18)
    static let noBodyReply = MilterProtocolFlags(rawValue: 1 << 19)
    /// Header values keep the space after the colon.
    static let headerLeadingSpace = MilterProtocolFlags(rawValue: 1 << 20)

    /// Postfix's MILTER8_V6_PROTO_MASK: every step can be left out, every reply but the end of
    /// the message's can be waived.
    static let offered = MilterProtocolFlags(rawValue: (1 << 21) - 1)

    /// The flag that leaves out `command`, and the one that waives its reply.
    static func flags(for command: MilterCommand) -> (skip: MilterProtocolFlags, noReply: MilterProtocolFlags) {
        switch command {
        case .connect: (.noConnect, .noConnectReply)
        case .helo: (.noHelo, .noHeloReply)
        case .mail: (.noMail, .noMailReply)
        case .recipient: (.noRecipient, .noRecipientReply)
        case .data: (.noData, .noDataReply)
        case .header: (.noHeaders, .noHeaderReply)
        case .endOfHeaders: (.noEndOfHeaders, .noEndOfHeadersReply)
        case .body: (.noBody, .noBodyReply)
        case .endOfBody, .abort, .macro, .optionNegotiation, .quit: ([], [])
        }
    }
}

/// A filter's packet (SMFIR_*), decoded.
enum MilterResponse: Sendable, Hashable {
    case optionNegotiation(version: UInt32, actions: MilterActions, flags: MilterProtocolFlags)
    case accept
    case `continue`
    case discard
    case reject
    case tempfail
    case skip
    case progress
    /// SMFIR_SHUTDOWN ('4') or SMFIR_CONN_FAIL ('f'): end the SMTP session.
    case shutdown
    /// `550 5.7.1 text`, possibly several lines with `550-` continuations.
    case replyCode(String)
    case quarantine(reason: String)
    case addHeader(name: [UInt8], value: [UInt8])
    case insertHeader(index: UInt32, name: [UInt8], value: [UInt8])
    case changeHeader(index: UInt32, name: [UInt8], value: [UInt8])
    case addRecipient(String, parameters: String?)
    case deleteRecipient(String)
    case changeSender(String, parameters: String?)
    case replaceBody(ByteBuffer)

    /// Decodes the data of a packet with command byte `code`.
    static func decode(code: UInt8, data: ByteBuffer, peer: String) throws(FilterError) -> MilterResponse {
        var data = data
        func malformed(_ what: String) -> FilterError {
            .malformedReply("\(peer): malformed \(what) from the milter")
        }
        func string(_ what: String) throws(FilterError) -> [UInt8] {
            guard let end = data.readableBytesView.firstIndex(of: 0) else { throw malformed(what) }
            let bytes = data.readBytes(length: end - data.readerIndex)!
            data.moveReaderIndex(forwardBy: 1)
            return bytes
        }
        func finished(_ response: MilterResponse, _ what: String) throws(FilterError) -> MilterResponse {
            // Postfix: a reply followed by bytes it should not have is a protocol error.
            guard data.readableBytes == 0 else { throw malformed(what) }
            return response
        }
        func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

        switch code {
        case UInt8(ascii: "O"):
            guard let version = data.readInteger(as: UInt32.self), let actions = data.readInteger(as: UInt32.self),
                let flags = data.readInteger(as: UInt32.self)
            else { throw malformed("option negotiation") }
            // Any macro lists after the three numbers answer SETSYMLIST, which is not offered.
            return .optionNegotiation(
                version: version, actions: MilterActions(rawValue: actions), flags: MilterProtocolFlags(rawValue: flags)
            )
        case UInt8(ascii: "a"): return try finished(.accept, "accept")
        case UInt8(ascii: "c"): return try finished(.continue, "continue")
        case UInt8(ascii: "d"): return try finished(.discard, "discard")
        case UInt8(ascii: "r"): return try finished(.reject, "reject")
        case UInt8(ascii: "t"): return try finished(.tempfail, "tempfail")
        case UInt8(ascii: "s"): return try finished(.skip, "skip")
        case UInt8(ascii: "p"): return try finished(.progress, "progress")
        case UInt8(ascii: "4"), UInt8(ascii: "f"): return try finished(.shutdown, "shutdown")
        case UInt8(ascii: "y"):
            // The text is NUL-terminated; Postfix reads it as a C string.
            let bytes = data.readableBytesView.prefix(while: { $0 != 0 })
            return .replyCode(text(Array(bytes)))
        case UInt8(ascii: "q"):
            return .quarantine(reason: text(Array(data.readableBytesView.prefix(while: { $0 != 0 }))))
        case UInt8(ascii: "h"):
            let name = try string("add header")
            return try finished(.addHeader(name: name, value: try string("add header")), "add header")
        case UInt8(ascii: "i"), UInt8(ascii: "m"):
            let what = code == UInt8(ascii: "i") ? "insert header" : "change header"
            guard let index = data.readInteger(as: UInt32.self) else { throw malformed(what) }
            let name = try string(what)
            let value = try string(what)
            return try finished(
                code == UInt8(ascii: "i")
                    ? .insertHeader(index: index, name: name, value: value)
                    : .changeHeader(index: index, name: name, value: value), what)
        case UInt8(ascii: "+"):
            return try finished(.addRecipient(text(try string("add recipient")), parameters: nil), "add recipient")
        case UInt8(ascii: "-"):
            return try finished(.deleteRecipient(text(try string("delete recipient"))), "delete recipient")
        case UInt8(ascii: "2"), UInt8(ascii: "e"):
            let what = code == UInt8(ascii: "2") ? "add recipient" : "change sender"
            let address = text(try string(what))
            let parameters = data.readableBytes > 0 ? text(try string(what)) : nil
            return try finished(
                code == UInt8(ascii: "2")
                    ? .addRecipient(address, parameters: parameters) : .changeSender(address, parameters: parameters),
                what)
        case UInt8(ascii: "b"):
            return .replaceBody(data)
        default:
            let shown =
                (32...126).contains(code) ? "'\(Character(Unicode.Scalar(code)))'" : "0x\(String(code, radix: 16))"
            throw .malformedReply("\(peer): unknown milter response \(shown)")
        }
    }
}

/// Cuts the filter's byte stream into packets.
struct MilterPacketDecoder: Sendable {
    /// The largest packet accepted: libmilter's largest negotiable data size (SMFIP_MDS_1M).
    static let maximumPacketSize = 1 << 20

    private var buffer = ByteBuffer()

    mutating func append(_ bytes: ByteBuffer) {
        var bytes = bytes
        buffer.writeBuffer(&bytes)
    }

    /// The next packet's command byte and data; nil until one is complete.
    mutating func next(peer: String) throws(FilterError) -> (code: UInt8, data: ByteBuffer)? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        guard length >= 1 else { throw .malformedReply("\(peer): milter packet of length 0") }
        guard length <= Self.maximumPacketSize else {
            throw .replyTooLarge("\(peer): milter packet of \(length) bytes (limit \(Self.maximumPacketSize))")
        }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        let code = buffer.readInteger(as: UInt8.self)!
        let data = buffer.readSlice(length: Int(length) - 1)!
        if buffer.readerIndex > 64 << 10 { buffer.discardReadBytes() }
        return (code, data)
    }
}

/// Writes the MTA's packets.
enum MilterPacket {
    /// One packet: length, command byte, data written by `data`.
    static func write(
        _ command: MilterCommand, to buffer: inout ByteBuffer, data: (inout ByteBuffer) -> Void = { _ in }
    ) {
        let lengthIndex = buffer.writerIndex
        buffer.writeInteger(UInt32(0))
        buffer.writeInteger(command.rawValue)
        data(&buffer)
        buffer.setInteger(UInt32(buffer.writerIndex - lengthIndex - 4), at: lengthIndex)
    }

    /// A NUL-terminated string; NUL bytes inside would end it early, so they are dropped.
    static func writeString(_ bytes: some Sequence<UInt8>, to buffer: inout ByteBuffer) {
        for byte in bytes where byte != 0 { buffer.writeInteger(byte) }
        buffer.writeInteger(UInt8(0))
    }

    static func optionNegotiation(
        version: UInt32, actions: MilterActions, flags: MilterProtocolFlags, to buffer: inout ByteBuffer
    ) {
        write(.optionNegotiation, to: &buffer) { data in
            data.writeInteger(version)
            data.writeInteger(actions.rawValue)
            data.writeInteger(flags.rawValue)
        }
    }

    /// SMFIC_MACRO: the command the macros belong to, then name and value strings.
    static func macros(for command: MilterCommand, _ macros: [(String, String)], to buffer: inout ByteBuffer) {
        write(.macro, to: &buffer) { data in
            data.writeInteger(command.rawValue)
            for (name, value) in macros {
                writeString(name.utf8, to: &data)
                writeString(value.utf8, to: &data)
            }
        }
    }

    /// SMFIC_CONNECT: host name, family ('4', '6', 'U' for none), port, address.
    static func connect(hostname: String, address: IPAddress?, port: Int, to buffer: inout ByteBuffer) {
        write(.connect, to: &buffer) { data in
            writeString(hostname.utf8, to: &data)
            guard let address else {
                data.writeInteger(UInt8(ascii: "U"))
                return
            }
            let plain = address.unmappedIPv4 ?? address
            data.writeInteger(UInt8(ascii: plain.isIPv4 ? "4" : "6"))
            data.writeInteger(UInt16(clamping: max(0, port)))
            writeString(plain.description.utf8, to: &data)
        }
    }

    /// A command whose data is a list of strings (HELO, MAIL, RCPT, HEADER).
    static func strings(_ command: MilterCommand, _ strings: [[UInt8]], to buffer: inout ByteBuffer) {
        write(command, to: &buffer) { data in
            for string in strings { writeString(string, to: &data) }
        }
    }
}
