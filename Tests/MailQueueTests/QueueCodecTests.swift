import Foundation
import NIOCore
import Testing

@testable import MailQueue

@Suite struct CRC32CTests {
    // RFC 3720 §B.4 test vectors, and the customary "123456789" check value.
    static let vectors: [(bytes: [UInt8], crc: UInt32)] = [
        (Array("123456789".utf8), 0xE306_9283),
        ([UInt8](repeating: 0, count: 32), 0x8A91_36AA),
        ([UInt8](repeating: 0xFF, count: 32), 0x62A8_AB43),
        (Array(0..<32), 0x46DD_794E),
        (Array((0..<32).reversed()), 0x113F_DB5C),
        ([], 0),
    ]

    @Test func knownVectors() {
        for vector in Self.vectors {
            #expect(CRC32C.checksum(vector.bytes) == vector.crc, "\(vector.bytes)")
        }
    }

    @Test func continuingEqualsWhole() {
        let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        let whole = CRC32C.checksum(bytes)
        for split in [0, 1, 7, 8, 9, 500, 999, 1000] {
            let first = CRC32C.checksum(bytes[..<split])
            let both = Array(bytes[split...]).withUnsafeBytes { CRC32C.checksum($0, continuing: first) }
            #expect(both == whole, "split at \(split)")
        }
    }
}

@Suite struct QueueIDTests {
    @Test func textRoundTrip() throws {
        for _ in 0..<100 {
            let id = QueueID.generate()
            let text = id.description
            #expect(text.count == 16)
            #expect(text.allSatisfy { "0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains($0) })
            #expect(QueueID(text) == id)
            #expect(QueueID(text.lowercased()) == id)
        }
    }

    @Test func generatedIDsAreOrderedAndUnique() {
        let ids = (0..<10_000).map { _ in QueueID.generate() }
        #expect(Set(ids).count == ids.count)
        #expect(zip(ids, ids.dropFirst()).allSatisfy { $0 < $1 })
        // The text form sorts the same way.
        #expect(zip(ids, ids.dropFirst()).allSatisfy { $0.description < $1.description })
        #expect(abs(ids[0].timestamp.timeIntervalSinceNow) < 60)
    }

    @Test(arguments: [
        "", "0123456789ABCDE", "0123456789ABCDEFG", "0123456789ABCDEI", "0123456789ABCDEU", "0123456789ABCDE-",
    ])
    func rejectsMalformed(_ text: String) {
        #expect(QueueID(text) == nil)
    }

    @Test func codable() throws {
        let id = QueueID.generate()
        let data = try JSONEncoder().encode([id])
        #expect(String(decoding: data, as: UTF8.self) == "[\"\(id)\"]")
        #expect(try JSONDecoder().decode([QueueID].self, from: data) == [id])
    }
}

@Suite struct LogRecordTests {
    static let id = QueueID("01JC4Z8X2M3N4P5Q")!
    static let envelope = QueueEnvelope(
        sender: "alice@example.test",
        recipients: [
            QueuedRecipient(address: "bob@example.test", originalRecipient: "rfc822;bob@example.test", notify: 6),
            QueuedRecipient(
                address: "carol@elsewhere.test", status: .deferred, attempts: 3,
                nextAttempt: Date(timeIntervalSince1970: 1_800_000_000.25), lastError: "451 4.7.1 try later"),
            QueuedRecipient(address: "δοκιμή@παράδειγμα.test", status: .bounced, attempts: 1, lastError: "550 5.1.1"),
        ],
        bodyType: "8BITMIME", smtpUTF8: true, dsnReturn: "HDRS", envelopeID: "QQ314159", clientAddress: "192.0.2.7",
        heloName: "client.example.test", authenticatedUser: "alice")

    static let records: [LogRecord] = [
        .message(
            MessageRecord(
                id: id, arrival: 1_763_900_000_123_456, size: 5, held: false, dataInFile: false, envelope: envelope)),
        .message(
            MessageRecord(
                id: id, arrival: 1, size: 3 << 20, held: true, delayWarned: true, dataInFile: true,
                envelope: QueueEnvelope(sender: "", recipients: [QueuedRecipient(address: "x@y.test")]))),
        .state(
            id,
            [
                RecipientStateRecord(index: 0, change: RecipientChange(status: .delivered, attempts: 1)),
                RecipientStateRecord(
                    index: 2,
                    change: RecipientChange(
                        status: .deferred, attempts: 2, nextAttempt: Date(timeIntervalSince1970: 1_800_000_000),
                        lastError: "421 4.4.2 timeout")),
            ]),
        .hold(id), .release(id), .remove(id), .delayWarned(id),
    ]

    static func encoded(_ record: LogRecord) -> ByteBuffer {
        var buffer = ByteBuffer()
        if case .message(let message) = record, !message.dataInFile {
            record.encode(into: &buffer, inlineData: ByteBuffer(string: String(repeating: "x", count: message.size)))
        } else {
            record.encode(into: &buffer)
        }
        return buffer
    }

    /// REQUIRETLS rides in the envelope section; a MESSAGE record written before it existed
    /// (its section one octet shorter, and its checksum over that) reads as without it.
    @Test func requireTLSRoundTripsAndOlderRecordsReadWithoutIt() throws {
        var envelope = QueueEnvelope(sender: "a@b.test", recipients: [QueuedRecipient(address: "c@d.test")])
        envelope.requireTLS = true
        let record = LogRecord.message(
            MessageRecord(id: Self.id, arrival: 1, size: 0, held: false, dataInFile: false, envelope: envelope))
        let current = Self.encoded(record)
        #expect(LogRecord.decode(current, at: 0) == .record(record, length: current.readableBytes))

        // The same record as the previous version wrote it: without the flags octet.
        var bytes = Array(current.readableBytesView)
        let payloadLength = Int(UInt32(bigEndian: bytes[5..<9].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }))
        let flags = 9 + payloadLength - 1
        #expect(bytes[flags] == 1)
        bytes.remove(at: flags)
        bytes.removeLast(4)  // the old checksum
        let envelopeLength = 9 + 10 + 8 + 1 + 8
        func put(_ value: UInt32, at index: Int) {
            withUnsafeBytes(of: value.bigEndian) { bytes.replaceSubrange(index..<index + 4, with: $0) }
        }
        put(UInt32(payloadLength - 1), at: 5)
        let sectionLength = Int(
            UInt32(
                bigEndian: bytes[envelopeLength..<envelopeLength + 4].withUnsafeBytes {
                    $0.loadUnaligned(as: UInt32.self)
                }))
        put(UInt32(sectionLength - 1), at: envelopeLength)
        let crc = CRC32C.checksum(bytes[4...])
        withUnsafeBytes(of: crc.bigEndian) { bytes += $0 }
        envelope.requireTLS = false
        let old = ByteBuffer(bytes: bytes)
        let expected = LogRecord.message(
            MessageRecord(id: Self.id, arrival: 1, size: 0, held: false, dataInFile: false, envelope: envelope))
        #expect(LogRecord.decode(old, at: 0) == .record(expected, length: bytes.count))
    }

    @Test(arguments: records)
    func roundTrip(_ record: LogRecord) {
        let buffer = Self.encoded(record)
        #expect(LogRecord.decode(buffer, at: 0) == .record(record, length: buffer.readableBytes))
    }

    @Test func consecutiveRecords() {
        var log = ByteBuffer()
        for record in Self.records { log.writeImmutableBuffer(Self.encoded(record)) }
        var offset = 0
        var decoded: [LogRecord] = []
        while case .record(let record, let length) = LogRecord.decode(log, at: offset) {
            decoded.append(record)
            offset += length
        }
        #expect(decoded == Self.records)
        #expect(LogRecord.decode(log, at: offset) == .end)
    }

    @Test func everyTruncationIsInvalid() {
        let whole = Self.encoded(Self.records[2])
        for length in 1..<whole.readableBytes {
            let cut = whole.getSlice(at: 0, length: length)!
            guard case .invalid = LogRecord.decode(cut, at: 0) else {
                Issue.record("cut at \(length) decoded")
                continue
            }
        }
    }

    @Test func everyFlippedByteIsInvalid() {
        let whole = Self.encoded(Self.records[0])
        for position in 0..<whole.readableBytes {
            var damaged = whole
            damaged.setInteger(whole.getInteger(at: position, as: UInt8.self)! ^ 0x20, at: position)
            guard case .invalid = LogRecord.decode(damaged, at: 0) else {
                Issue.record("flip at \(position) decoded")
                continue
            }
        }
    }
}
