import NIOCore

/// RCODE (RFC 1035 §4.1.1), extended to 12 bits by the OPT record (RFC 6891 §6.1.3).
public struct DNSResponseCode: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let noError = DNSResponseCode(rawValue: 0)
    public static let formatError = DNSResponseCode(rawValue: 1)
    public static let serverFailure = DNSResponseCode(rawValue: 2)
    public static let nameError = DNSResponseCode(rawValue: 3)
    public static let notImplemented = DNSResponseCode(rawValue: 4)
    public static let refused = DNSResponseCode(rawValue: 5)
    public static let badVersion = DNSResponseCode(rawValue: 16)

    public var description: String {
        switch self {
        case .noError: "NOERROR"
        case .formatError: "FORMERR"
        case .serverFailure: "SERVFAIL"
        case .nameError: "NXDOMAIN"
        case .notImplemented: "NOTIMP"
        case .refused: "REFUSED"
        case .badVersion: "BADVERS"
        default: "RCODE\(rawValue)"
        }
    }
}

/// The fixed 12-octet header (RFC 1035 §4.1.1) minus the section counts, which the encoder
/// derives from the sections. AD and CD are RFC 4035 §3.2.
///
///     0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15
///     ID
///     QR Opcode      AA TC RD RA Z  AD CD RCODE
///     QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT
public struct DNSHeader: Sendable, Hashable {
    public var id: UInt16
    public var isResponse: Bool
    /// 0 is QUERY (RFC 1035 §4.1.1).
    public var opcode: UInt8
    public var isAuthoritative: Bool
    public var isTruncated: Bool
    public var recursionDesired: Bool
    public var recursionAvailable: Bool
    /// AD: the resolver validated the answer with DNSSEC (RFC 4035 §3.2.3).
    public var authenticData: Bool
    public var checkingDisabled: Bool
    /// The low four bits of the response code; see `DNSMessage.responseCode`.
    public var rcode: UInt8

    public init(
        id: UInt16, isResponse: Bool = false, opcode: UInt8 = 0, isAuthoritative: Bool = false,
        isTruncated: Bool = false, recursionDesired: Bool = true, recursionAvailable: Bool = false,
        authenticData: Bool = false, checkingDisabled: Bool = false, rcode: UInt8 = 0
    ) {
        self.id = id
        self.isResponse = isResponse
        self.opcode = opcode
        self.isAuthoritative = isAuthoritative
        self.isTruncated = isTruncated
        self.recursionDesired = recursionDesired
        self.recursionAvailable = recursionAvailable
        self.authenticData = authenticData
        self.checkingDisabled = checkingDisabled
        self.rcode = rcode
    }

    init(id: UInt16, flags: UInt16) {
        self.init(
            id: id, isResponse: flags & 0x8000 != 0, opcode: UInt8((flags >> 11) & 0xF),
            isAuthoritative: flags & 0x0400 != 0, isTruncated: flags & 0x0200 != 0,
            recursionDesired: flags & 0x0100 != 0, recursionAvailable: flags & 0x0080 != 0,
            authenticData: flags & 0x0020 != 0, checkingDisabled: flags & 0x0010 != 0,
            rcode: UInt8(flags & 0xF))
    }

    var flags: UInt16 {
        var flags = UInt16(opcode & 0xF) << 11 | UInt16(rcode & 0xF)
        if isResponse { flags |= 0x8000 }
        if isAuthoritative { flags |= 0x0400 }
        if isTruncated { flags |= 0x0200 }
        if recursionDesired { flags |= 0x0100 }
        if recursionAvailable { flags |= 0x0080 }
        if authenticData { flags |= 0x0020 }
        if checkingDisabled { flags |= 0x0010 }
        return flags
    }
}

/// One entry of the question section (RFC 1035 §4.1.2).
public struct DNSQuestion: Sendable, Hashable {
    public var name: DNSName
    public var type: DNSRecordType
    public var dnsClass: UInt16

    public init(name: DNSName, type: DNSRecordType, dnsClass: UInt16 = dnsClassIN) {
        self.name = name
        self.type = type
        self.dnsClass = dnsClass
    }
}

/// One EDNS0 option (RFC 6891 §6.1.2), kept as raw octets.
public struct EDNSOption: Sendable, Hashable {
    public var code: UInt16
    public var data: [UInt8]

    public init(code: UInt16, data: [UInt8]) {
        self.code = code
        self.data = data
    }
}

/// The OPT pseudo-record (RFC 6891 §6.1.2): its CLASS is the UDP payload size and its TTL
/// holds the extended RCODE, the EDNS version and the DO bit (RFC 3225 §3).
public struct OPTRecord: Sendable, Hashable {
    public var udpPayloadSize: UInt16
    /// The upper eight bits of the 12-bit response code.
    public var extendedRCode: UInt8
    public var version: UInt8
    /// DO: the client understands DNSSEC records (RFC 3225).
    public var dnssecOK: Bool
    public var options: [EDNSOption]

    public init(
        udpPayloadSize: UInt16 = DNSLimits.ednsUDPPayloadSize, extendedRCode: UInt8 = 0,
        version: UInt8 = 0, dnssecOK: Bool = true, options: [EDNSOption] = []
    ) {
        self.udpPayloadSize = udpPayloadSize
        self.extendedRCode = extendedRCode
        self.version = version
        self.dnssecOK = dnssecOK
        self.options = options
    }
}

/// A DNS message (RFC 1035 §4.1): header, question, answer, authority and additional sections.
/// The OPT pseudo-record is lifted out of the additional section into `opt`.
public struct DNSMessage: Sendable, Hashable {
    public var header: DNSHeader
    public var questions: [DNSQuestion]
    public var answers: [DNSResourceRecord]
    public var authority: [DNSResourceRecord]
    /// The additional section without the OPT record.
    public var additional: [DNSResourceRecord]
    public var opt: OPTRecord?

    public init(
        header: DNSHeader, questions: [DNSQuestion] = [], answers: [DNSResourceRecord] = [],
        authority: [DNSResourceRecord] = [], additional: [DNSResourceRecord] = [],
        opt: OPTRecord? = nil
    ) {
        self.header = header
        self.questions = questions
        self.answers = answers
        self.authority = authority
        self.additional = additional
        self.opt = opt
    }

    /// The full response code: the header's four bits plus the OPT record's upper eight.
    public var responseCode: DNSResponseCode {
        DNSResponseCode(rawValue: UInt16(opt?.extendedRCode ?? 0) << 4 | UInt16(header.rcode & 0xF))
    }

    /// A recursive query for one name and type with EDNS0 (RFC 6891): DO set so that a
    /// validating resolver reports AD (RFC 3225), and a 1232-octet UDP payload size.
    public static func query(
        id: UInt16, name: DNSName, type: DNSRecordType, dnssecOK: Bool = true,
        udpPayloadSize: UInt16 = DNSLimits.ednsUDPPayloadSize
    ) -> DNSMessage {
        DNSMessage(
            header: DNSHeader(id: id, recursionDesired: true),
            questions: [DNSQuestion(name: name, type: type)],
            opt: OPTRecord(udpPayloadSize: udpPayloadSize, dnssecOK: dnssecOK))
    }

    // MARK: Encoding

    /// The message in wire form, names uncompressed.
    public func encoded() -> ByteBuffer {
        var buffer = ByteBuffer()
        write(to: &buffer)
        return buffer
    }

    /// Writes the message in wire form. Sections longer than 65535 entries cannot be encoded;
    /// the encoder is for queries and test servers, which never come close.
    public func write(to buffer: inout ByteBuffer) {
        buffer.writeInteger(header.id)
        buffer.writeInteger(header.flags)
        buffer.writeInteger(UInt16(questions.count))
        buffer.writeInteger(UInt16(answers.count))
        buffer.writeInteger(UInt16(authority.count))
        buffer.writeInteger(UInt16(additional.count + (opt == nil ? 0 : 1)))
        for question in questions {
            question.name.write(to: &buffer)
            buffer.writeInteger(question.type.rawValue)
            buffer.writeInteger(question.dnsClass)
        }
        for record in answers + authority + additional {
            Self.write(record, to: &buffer)
        }
        if let opt {
            DNSName.root.write(to: &buffer)
            buffer.writeInteger(DNSRecordType.opt.rawValue)
            buffer.writeInteger(opt.udpPayloadSize)
            let ttl =
                UInt32(opt.extendedRCode) << 24 | UInt32(opt.version) << 16
                | (opt.dnssecOK ? 0x8000 : 0)
            buffer.writeInteger(ttl)
            var data = ByteBuffer()
            for option in opt.options {
                data.writeInteger(option.code)
                data.writeInteger(UInt16(option.data.count))
                data.writeBytes(option.data)
            }
            buffer.writeInteger(UInt16(data.readableBytes))
            buffer.writeBuffer(&data)
        }
    }

    private static func write(_ record: DNSResourceRecord, to buffer: inout ByteBuffer) {
        record.name.write(to: &buffer)
        buffer.writeInteger(record.type.rawValue)
        buffer.writeInteger(record.dnsClass)
        buffer.writeInteger(record.ttl)
        let lengthIndex = buffer.writerIndex
        buffer.writeInteger(UInt16(0))
        record.data.write(to: &buffer)
        buffer.setInteger(UInt16(buffer.writerIndex - lengthIndex - 2), at: lengthIndex)
    }

    // MARK: Parsing

    /// Parses a whole message. Hostile input throws `DNSFormatError`; it never traps, loops or
    /// allocates more than a small multiple of its own size. Bytes after the last record throw.
    public static func parse(_ bytes: ByteBuffer) throws(DNSFormatError) -> DNSMessage {
        var reader = DNSWireReader(bytes: Array(bytes.readableBytesView))
        return try parse(&reader)
    }

    // message  = header question answer authority additional    (RFC 1035 §4.1)
    private static func parse(_ reader: inout DNSWireReader) throws(DNSFormatError) -> DNSMessage {
        let id = try reader.readUInt16()
        let flags = try reader.readUInt16()
        let questionCount = try reader.readUInt16()
        let answerCount = try reader.readUInt16()
        let authorityCount = try reader.readUInt16()
        let additionalCount = try reader.readUInt16()
        var message = DNSMessage(header: DNSHeader(id: id, flags: flags))

        // question = QNAME QTYPE QCLASS                              (RFC 1035 §4.1.2)
        for _ in 0..<questionCount {
            let name = try reader.readName()
            let type = DNSRecordType(rawValue: try reader.readUInt16())
            let dnsClass = try reader.readUInt16()
            message.questions.append(DNSQuestion(name: name, type: type, dnsClass: dnsClass))
        }
        for _ in 0..<answerCount {
            guard case .record(let record) = try parseRecord(&reader) else { throw .badOPT }
            message.answers.append(record)
        }
        for _ in 0..<authorityCount {
            guard case .record(let record) = try parseRecord(&reader) else { throw .badOPT }
            message.authority.append(record)
        }
        for _ in 0..<additionalCount {
            switch try parseRecord(&reader) {
            case .record(let record):
                message.additional.append(record)
            case .opt(let opt):
                guard message.opt == nil else { throw .badOPT }
                message.opt = opt
            }
        }
        guard reader.index == reader.bytes.count else { throw .trailingBytes }
        return message
    }

    private enum ParsedRecord {
        case record(DNSResourceRecord)
        case opt(OPTRecord)
    }

    // RR = NAME TYPE CLASS TTL RDLENGTH RDATA                        (RFC 1035 §4.1.3)
    private static func parseRecord(_ reader: inout DNSWireReader) throws(DNSFormatError) -> ParsedRecord {
        let name = try reader.readName()
        let type = DNSRecordType(rawValue: try reader.readUInt16())
        let dnsClass = try reader.readUInt16()
        let ttl = try reader.readUInt32()
        let length = Int(try reader.readUInt16())
        let end = reader.index + length
        guard end <= reader.bytes.count else { throw .truncated }
        var rdata = reader
        rdata.limit = end
        reader.index = end

        if type == .opt {
            guard name.isRoot else { throw .badOPT }
            var options: [EDNSOption] = []
            // option = OPTION-CODE OPTION-LENGTH OPTION-DATA          (RFC 6891 §6.1.2)
            while rdata.index < end {
                let code = try rdata.readUInt16()
                let optionLength = Int(try rdata.readUInt16())
                options.append(EDNSOption(code: code, data: try rdata.readBytes(optionLength)))
            }
            return .opt(
                OPTRecord(
                    udpPayloadSize: dnsClass, extendedRCode: UInt8(ttl >> 24),
                    version: UInt8(truncatingIfNeeded: ttl >> 16), dnssecOK: ttl & 0x8000 != 0,
                    options: options))
        }

        let data: DNSRecordData
        do throws(DNSFormatError) {
            data = try parseRData(type: type, dnsClass: dnsClass, &rdata)
        } catch {
            // Running off the end of RDATA is a length mismatch, not a short message.
            throw error == .truncated ? .badRData(type) : error
        }
        guard rdata.index == end else { throw .badRData(type) }
        return .record(DNSResourceRecord(name: name, dnsClass: dnsClass, ttl: ttl, data: data))
    }

    private static func parseRData(
        type: DNSRecordType, dnsClass: UInt16, _ rdata: inout DNSWireReader
    ) throws(DNSFormatError) -> DNSRecordData {
        guard dnsClass == dnsClassIN else {
            return .unknown(type: type, bytes: try rdata.readBytes(rdata.limit - rdata.index))
        }
        switch type {
        case .a:  // ADDRESS: 32 bits                                  (RFC 1035 §3.4.1)
            return .a(IPv4Address(rawValue: try rdata.readUInt32()))
        case .aaaa:  // 128-bit address                                (RFC 3596 §2.2)
            return .aaaa(IPv6Address(bytes: try rdata.readBytes(16))!)
        case .ns:
            return .ns(try rdata.readName())
        case .cname:
            return .cname(try rdata.readName())
        case .ptr:
            return .ptr(try rdata.readName())
        case .mx:  // PREFERENCE EXCHANGE                              (RFC 1035 §3.3.9)
            let preference = try rdata.readUInt16()
            return .mx(preference: preference, exchange: try rdata.readName())
        case .txt:  // TXT-DATA = 1*<character-string>                 (RFC 1035 §3.3.14)
            var strings: [[UInt8]] = []
            repeat {
                let length = Int(try rdata.readUInt8())
                strings.append(try rdata.readBytes(length))
            } while rdata.index < rdata.limit
            return .txt(strings)
        case .soa:  // MNAME RNAME SERIAL REFRESH RETRY EXPIRE MINIMUM  (RFC 1035 §3.3.13)
            let primary = try rdata.readName()
            let mailbox = try rdata.readName()
            return .soa(
                SOARecord(
                    primaryServer: primary, responsibleMailbox: mailbox,
                    serial: try rdata.readUInt32(), refresh: try rdata.readUInt32(),
                    retry: try rdata.readUInt32(), expire: try rdata.readUInt32(),
                    minimum: try rdata.readUInt32()))
        case .tlsa:  // usage selector matching-type data              (RFC 6698 §2.1)
            let usage = try rdata.readUInt8()
            let selector = try rdata.readUInt8()
            let matchingType = try rdata.readUInt8()
            return .tlsa(
                TLSARecord(
                    usage: usage, selector: selector, matchingType: matchingType,
                    data: try rdata.readBytes(rdata.limit - rdata.index)))
        default:  // RFC 3597: unknown types stay opaque octets.
            return .unknown(type: type, bytes: try rdata.readBytes(rdata.limit - rdata.index))
        }
    }
}

/// A cursor over a whole message: compression pointers may point anywhere before the name,
/// while sequential reads stop at `limit` (the end of the message or of one RDATA).
struct DNSWireReader {
    let bytes: [UInt8]
    var index = 0
    var limit: Int

    init(bytes: [UInt8]) {
        self.bytes = bytes
        self.limit = bytes.count
    }

    mutating func readUInt8() throws(DNSFormatError) -> UInt8 {
        guard index < limit else { throw .truncated }
        defer { index += 1 }
        return bytes[index]
    }

    mutating func readUInt16() throws(DNSFormatError) -> UInt16 {
        guard limit - index >= 2 else { throw .truncated }
        defer { index += 2 }
        return UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1])
    }

    mutating func readUInt32() throws(DNSFormatError) -> UInt32 {
        guard limit - index >= 4 else { throw .truncated }
        defer { index += 4 }
        return bytes[index..<index + 4].reduce(0) { $0 << 8 | UInt32($1) }
    }

    mutating func readBytes(_ count: Int) throws(DNSFormatError) -> [UInt8] {
        guard count >= 0, limit - index >= count else { throw .truncated }
        defer { index += count }
        return Array(bytes[index..<index + count])
    }

    // name    = *label ( zero-octet / pointer )                    (RFC 1035 §4.1.4)
    // label   = length-octet 1*63OCTET   ; length-octet = 00xxxxxx
    // pointer = 11 14BIT-OFFSET
    /// Reads a possibly compressed name. Each pointer must point strictly before the start of
    /// the label sequence that contains it, so every jump goes backwards and loops are impossible.
    mutating func readName() throws(DNSFormatError) -> DNSName {
        var labels: [[UInt8]] = []
        var wireLength = 1
        var position = index
        var bound = limit
        var sequenceStart = index
        var pointers = 0
        var resumeAt: Int?
        while true {
            guard position < bound else { throw .truncated }
            let length = Int(bytes[position])
            switch length & 0xC0 {
            case 0x00:
                if length == 0 {
                    index = resumeAt ?? position + 1
                    return DNSName(validatedLabels: labels)
                }
                guard bound - position - 1 >= length else { throw .truncated }
                wireLength += length + 1
                guard wireLength <= DNSLimits.nameLength else { throw .nameTooLong }
                labels.append(Array(bytes[position + 1...position + length]))
                position += 1 + length
            case 0xC0:
                guard bound - position >= 2 else { throw .truncated }
                let target = (length & 0x3F) << 8 | Int(bytes[position + 1])
                guard target < sequenceStart else { throw .badPointer }
                pointers += 1
                guard pointers <= DNSLimits.compressionPointers else { throw .tooManyPointers }
                if resumeAt == nil { resumeAt = position + 2 }
                // A pointer may leave an RDATA to reach a name earlier in the message.
                bound = bytes.count
                position = target
                sequenceStart = target
            default:
                throw .badLabelType
            }
        }
    }
}
