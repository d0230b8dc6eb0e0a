import NIOCore
import Testing

@testable import DNSClient

/// Bytes from hex text; spaces and newlines are ignored.
func hex(_ text: String) -> ByteBuffer {
    let digits = text.filter(\.isHexDigit).map { UInt8(String($0), radix: 16)! }
    precondition(digits.count % 2 == 0, "odd number of hex digits")
    return ByteBuffer(bytes: stride(from: 0, to: digits.count, by: 2).map { digits[$0] << 4 | digits[$0 + 1] })
}

/// One reply header: ID, flags, one question, `answers` answers, nothing else.
func replyHeader(id: String = "1234", flags: String = "8180", answers: Int = 1) -> String {
    "\(id) \(flags) 0001 000\(answers) 0000 0000"
}

@Suite struct DNSMessageEncodingTests {
    @Test func queryHasEDNSWithDOAnd1232() {
        let query = DNSMessage.query(id: 0xBEEF, name: "example.com", type: .mx)
        let expected = hex(
            """
            beef 0100 0001 0000 0000 0001
            07 6578616d706c65 03 636f6d 00 000f 0001
            00 0029 04d0 00008000 0000
            """)
        #expect(query.encoded() == expected)
    }

    @Test func everyRecordTypeRoundTrips() throws {
        let message = DNSMessage(
            header: DNSHeader(
                id: 7, isResponse: true, isAuthoritative: true, recursionAvailable: true,
                authenticData: true, checkingDisabled: true, rcode: 3),
            questions: [DNSQuestion(name: "example.com", type: .a)],
            answers: [
                DNSResourceRecord(name: "example.com", ttl: 1, data: .a(IPv4Address(192, 0, 2, 1))),
                DNSResourceRecord(name: "example.com", ttl: 2, data: .aaaa(IPv6Address("2001:db8::1")!)),
                DNSResourceRecord(name: "example.com", ttl: 3, data: .mx(preference: 10, exchange: "mx.example.com")),
                DNSResourceRecord(
                    name: "example.com", ttl: 4, data: .txt([Array("v=spf1 ".utf8), Array("-all".utf8), []])),
                DNSResourceRecord(name: "www.example.com", ttl: 5, data: .cname("example.com")),
                DNSResourceRecord(name: "1.2.0.192.in-addr.arpa", ttl: 6, data: .ptr("example.com")),
                DNSResourceRecord(name: "example.com", ttl: 7, data: .ns("ns1.example.com")),
                DNSResourceRecord(
                    name: "_25._tcp.example.com", ttl: 8,
                    data: .tlsa(TLSARecord(usage: 3, selector: 1, matchingType: 1, data: Array(0..<32)))),
                DNSResourceRecord(name: "example.com", ttl: 9, data: .unknown(type: .rrsig, bytes: [1, 2, 3])),
                DNSResourceRecord(name: "example.com", dnsClass: 3, ttl: 10, data: .unknown(type: .a, bytes: [9])),
            ],
            authority: [
                DNSResourceRecord(
                    name: "example.com", ttl: 11,
                    data: .soa(
                        SOARecord(
                            primaryServer: "ns1.example.com", responsibleMailbox: "hostmaster.example.com",
                            serial: 2024, refresh: 7200, retry: 3600, expire: 604800, minimum: 300)))
            ],
            additional: [DNSResourceRecord(name: "ns1.example.com", ttl: 12, data: .a(IPv4Address(192, 0, 2, 53)))],
            opt: OPTRecord(
                udpPayloadSize: 4096, extendedRCode: 1, version: 0, dnssecOK: false,
                options: [EDNSOption(code: 10, data: [1, 2, 3, 4, 5, 6, 7, 8])]))
        let parsed = try DNSMessage.parse(message.encoded())
        #expect(parsed == message)
        #expect(parsed.responseCode == DNSResponseCode(rawValue: 0x13))
    }

    @Test func longTXTStringsAreSplitAt255() throws {
        let long = [UInt8](repeating: 0x61, count: 300)
        let record = DNSResourceRecord(name: "example.com", ttl: 1, data: .txt([long]))
        let message = DNSMessage(header: DNSHeader(id: 1, isResponse: true), answers: [record])
        let parsed = try DNSMessage.parse(message.encoded())
        #expect(parsed.answers.first?.data == .txt([Array(long[..<255]), Array(long[255...])]))
    }
}

@Suite struct DNSMessageParsingTests {
    /// An MX reply as a recursive resolver sends it: compressed names, a pointer into RDATA
    /// (the glue A record's owner points at "mx1" inside the first MX), an OPT record.
    static let mxReply = """
        1234 8180 0001 0002 0000 0002
        07 6578616d706c65 03 636f6d 00 000f 0001
        c00c 000f 0001 00000e10 0008 000a 03 6d7831 c00c
        c00c 000f 0001 00000e10 0008 0014 03 6d7832 c00c
        c02b 0001 0001 00000e10 0004 c0000201
        00 0029 04d0 00008000 0000
        """

    @Test func mxReplyWithCompression() throws {
        let message = try DNSMessage.parse(hex(Self.mxReply))
        #expect(
            message.header == DNSHeader(id: 0x1234, isResponse: true, recursionDesired: true, recursionAvailable: true))
        #expect(message.questions == [DNSQuestion(name: "example.com", type: .mx)])
        #expect(
            message.answers.map(\.data) == [
                .mx(preference: 10, exchange: "mx1.example.com"), .mx(preference: 20, exchange: "mx2.example.com"),
            ])
        #expect(message.answers.allSatisfy { $0.ttl == 3600 && $0.name == "example.com" })
        #expect(
            message.additional == [
                DNSResourceRecord(name: "mx1.example.com", ttl: 3600, data: .a(IPv4Address(192, 0, 2, 1)))
            ])
        #expect(message.opt == OPTRecord(udpPayloadSize: 1232, dnssecOK: true))
        #expect(message.responseCode == .noError)
    }

    @Test func cnameAndAWithADBit() throws {
        let message = try DNSMessage.parse(
            hex(
                """
                abcd 81a0 0001 0002 0000 0000
                03 777777 07 6578616d706c65 03 6f7267 00 0001 0001
                c00c 0005 0001 0000012c 0006 03 776562 c010
                c02d 0001 0001 0000003c 0004 c6336407
                """))
        #expect(message.header.authenticData)
        #expect(message.answers.map(\.name) == ["www.example.org", "web.example.org"])
        let answer = try StubResolver.answer(from: message, name: "www.example.org", type: .a)
        #expect(answer.value == [.a(IPv4Address(198, 51, 100, 7))])
        #expect(answer.authenticated)
        #expect(answer.ttl == 60)
        #expect(answer.canonicalName == "web.example.org")
    }

    @Test func nxdomainWithSOA() throws {
        let message = try DNSMessage.parse(
            hex(
                """
                0001 8183 0001 0000 0001 0000
                04 6e6f7065 07 6578616d706c65 00 0001 0001
                c011 0006 0001 00000e10 0026
                02 6e73 c011 0a 686f73746d6173746572 c011
                00000001 00001c20 00000e10 00093a80 0000012c
                """))
        #expect(message.responseCode == .nameError)
        let soa = SOARecord(
            primaryServer: "ns.example", responsibleMailbox: "hostmaster.example", serial: 1,
            refresh: 7200, retry: 3600, expire: 604800, minimum: 300)
        #expect(message.authority == [DNSResourceRecord(name: "example", ttl: 3600, data: .soa(soa))])
        #expect(throws: DNSError.nameNotFound) {
            try StubResolver.answer(from: message, name: "nope.example", type: .a)
        }
    }

    /// Single-answer replies, one per RDATA layout.
    static let rdataFixtures: [(String, DNSRecordData)] = [
        (
            "07 6578616d706c65 03 6e6574 00 0010 0001 c00c 0010 0001 0000012c 000d 07 763d7370663120 04 2d616c6c",
            .txt([Array("v=spf1 ".utf8), Array("-all".utf8)])
        ),
        (
            "07 6578616d706c65 03 636f6d 00 001c 0001 c00c 001c 0001 0000003c 0010 20010db8000000000000000000000001",
            .aaaa(IPv6Address("2001:db8::1")!)
        ),
        (
            "01 31 01 32 01 30 03 313932 07 696e2d61646472 04 61727061 00 000c 0001"
                + " c00c 000c 0001 00000e10 0012 04 6d61696c 07 6578616d706c65 03 636f6d 00",
            .ptr("mail.example.com")
        ),
        (
            "03 5f3235 04 5f746370 02 6d78 07 6578616d706c65 03 636f6d 00 0034 0001"
                + " c00c 0034 0001 00000e10 0023 03 01 01 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            .tlsa(TLSARecord(usage: 3, selector: 1, matchingType: 1, data: Array(0..<32)))
        ),
        (
            "07 6578616d706c65 03 636f6d 00 ff00 0001 c00c ff00 0001 00000e10 0003 616263",
            .unknown(type: DNSRecordType(rawValue: 0xFF00), bytes: [0x61, 0x62, 0x63])
        ),
        (
            "07 6578616d706c65 03 636f6d 00 0001 0003 c00c 0001 0003 00000e10 0002 abcd",
            .unknown(type: .a, bytes: [0xAB, 0xCD])
        ),
        (
            "07 6578616d706c65 03 636f6d 00 0002 0001 c00c 0002 0001 00000e10 0006 03 6e7331 c00c",
            .ns("ns1.example.com")
        ),
    ]

    @Test(arguments: rdataFixtures)
    func rdata(body: String, expected: DNSRecordData) throws {
        let message = try DNSMessage.parse(hex(replyHeader() + body))
        #expect(message.answers.map(\.data) == [expected])
    }

    @Test func everyTruncationThrows() {
        let whole = hex(Self.mxReply)
        for length in 0..<whole.readableBytes {
            #expect(throws: DNSFormatError.self) {
                try DNSMessage.parse(whole.getSlice(at: 0, length: length)!)
            }
        }
    }

    static let malformed: [(String, String, DNSFormatError)] = [
        ("empty", "", .truncated),
        ("short header", "1234 8180 0001 0000 0000 00", .truncated),
        ("question missing", "1234 8180 0001 0000 0000 0000", .truncated),
        ("pointer to itself", "1234 8180 0001 0000 0000 0000 c00c 0001 0001", .badPointer),
        ("pointer forward", "1234 8180 0001 0000 0000 0000 c010 0001 0001 00 00", .badPointer),
        (
            "pointer loop through a label",
            "1234 8180 0001 0000 0000 0000 01 61 c00c 0001 0001", .badPointer
        ),
        ("extended label type", "1234 8180 0001 0000 0000 0000 41 61 00 0001 0001", .badLabelType),
        ("label runs past end", "1234 8180 0001 0000 0000 0000 05 6162", .truncated),
        (
            "A with five octets",
            replyHeader() + "01 61 00 0001 0001 c00c 0001 0001 00000e10 0005 c000020100", .badRData(.a)
        ),
        (
            "AAAA with four octets",
            replyHeader() + "01 61 00 001c 0001 c00c 001c 0001 00000e10 0004 c0000201", .badRData(.aaaa)
        ),
        (
            "RDLENGTH past the end",
            replyHeader() + "01 61 00 0001 0001 c00c 0001 0001 00000e10 0010 c0000201", .truncated
        ),
        (
            "MX name runs past RDATA",
            replyHeader() + "01 61 00 000f 0001 c00c 000f 0001 00000e10 0004 000a 02 6d 78 00", .badRData(.mx)
        ),
        (
            "MX name shorter than RDATA",
            replyHeader() + "01 61 00 000f 0001 c00c 000f 0001 00000e10 0005 000a 00 ff ff", .badRData(.mx)
        ),
        (
            "TXT string past RDATA",
            replyHeader() + "01 61 00 0010 0001 c00c 0010 0001 00000e10 0003 05 6162", .badRData(.txt)
        ),
        ("empty TXT", replyHeader() + "01 61 00 0010 0001 c00c 0010 0001 00000e10 0000", .badRData(.txt)),
        ("short TLSA", replyHeader() + "01 61 00 0034 0001 c00c 0034 0001 00000e10 0002 0301", .badRData(.tlsa)),
        (
            "SOA cut short", replyHeader() + "01 61 00 0006 0001 c00c 0006 0001 00000e10 0006 00 00 00000001",
            .badRData(.soa)
        ),
        (
            "two OPT records",
            "1234 8180 0000 0000 0000 0002 00 0029 04d0 00000000 0000 00 0029 04d0 00000000 0000", .badOPT
        ),
        ("OPT in the answer", "1234 8180 0000 0001 0000 0000 00 0029 04d0 00000000 0000", .badOPT),
        ("OPT not at the root", "1234 8180 0000 0000 0000 0001 01 61 00 0029 04d0 00000000 0000", .badOPT),
        ("OPT option past RDATA", "1234 8180 0000 0000 0000 0001 00 0029 04d0 00000000 0004 000a 0008", .truncated),
        ("trailing bytes", "1234 8180 0000 0000 0000 0000 00", .trailingBytes),
    ]

    @Test(arguments: malformed)
    func malformedMessage(name: String, bytes: String, expected: DNSFormatError) {
        #expect(throws: expected, "\(name)") { try DNSMessage.parse(hex(bytes)) }
    }

    @Test func nameLongerThan255Octets() {
        // 128 one-octet labels: 256 octets plus the root.
        let labels = String(repeating: "0161", count: 128)
        #expect(throws: DNSFormatError.nameTooLong) {
            try DNSMessage.parse(hex("1234 8180 0001 0000 0000 0000" + labels + "00 0001 0001"))
        }
    }

    @Test func longChainOfBackwardPointers() {
        // An unknown record's RDATA holds a root name and 80 pointers, each to the one before;
        // the next record's owner points at the last. Every jump is backwards, but too many.
        var buffer = hex(replyHeader(answers: 2) + "00 0001 0001 00 ff00 0001 00000000")
        let rdataStart = buffer.writerIndex + 2
        buffer.writeInteger(UInt16(1 + 2 * 80))
        buffer.writeInteger(UInt8(0))
        for index in 0..<80 {
            let previous = index == 0 ? rdataStart : rdataStart + 1 + 2 * (index - 1)
            buffer.writeInteger(UInt16(0xC000 | previous))
        }
        buffer.writeInteger(UInt16(0xC000 | (rdataStart + 1 + 2 * 79)))
        buffer.writeBytes([0, 1, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(throws: DNSFormatError.tooManyPointers) { try DNSMessage.parse(buffer) }
    }

    /// A fuzz pass with a fixed seed: random corruption of good messages must parse or throw.
    @Test func randomCorruptionNeverTraps() {
        var random = SplitMix64(seed: 0x5EED)
        let seeds = [Self.mxReply] + Self.rdataFixtures.map { replyHeader() + $0.0 }
        for seed in seeds {
            let original = Array(hex(seed).readableBytesView)
            for _ in 0..<500 {
                var bytes = original
                for _ in 0..<Int.random(in: 1...4, using: &random) {
                    bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
                }
                if Bool.random(using: &random) {
                    bytes.removeLast(Int.random(in: 0..<bytes.count, using: &random))
                }
                _ = try? DNSMessage.parse(ByteBuffer(bytes: bytes))
            }
        }
    }
}

struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
