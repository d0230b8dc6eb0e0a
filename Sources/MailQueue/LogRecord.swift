import Foundation
import NIOCore

/// One record of the queue log (pure codec, no I/O).
///
/// Framing, all integers big-endian:
///
///     magic "TQL1" (4) | type (1) | payload length (4) | payload | CRC-32C (4)
///
/// The CRC covers type, length and payload, so a torn or overwritten record is recognised
/// whatever part of it reached the disk. A MESSAGE record stored inline ends with the message
/// data, so that its position in the segment is enough to read the data back later.
enum LogRecord: Sendable, Hashable {
    /// A message entering the queue, or a newer copy of it (compaction) that supersedes the old.
    case message(MessageRecord)
    /// The delivery state of every recipient of a message, superseding the MESSAGE record's
    /// and any earlier STATE record's: the index then needs only the latest one's position.
    case state(QueueID, [RecipientStateRecord])
    case hold(QueueID)
    case release(QueueID)
    /// The message is gone (every recipient final, or deleted by an administrator).
    case remove(QueueID)
    /// The sender was told that delivery is delayed (`delay_warning`): never again.
    case delayWarned(QueueID)

    enum Kind: UInt8 {
        case message = 1, state, hold, release, remove, delayWarned
    }

    static let magic: UInt32 = 0x5451_4C31
    static let headerLength = 9
    static let trailerLength = 4

    var id: QueueID {
        switch self {
        case .message(let record): return record.id
        case .state(let id, _), .hold(let id), .release(let id), .remove(let id), .delayWarned(let id): return id
        }
    }

    var kind: Kind {
        switch self {
        case .message: return .message
        case .state: return .state
        case .hold: return .hold
        case .release: return .release
        case .remove: return .remove
        case .delayWarned: return .delayWarned
        }
    }
}

/// The payload of a MESSAGE record, apart from inline data.
struct MessageRecord: Sendable, Hashable {
    var id: QueueID
    /// Microseconds since 1970.
    var arrival: Int64
    /// Octets of message data.
    var size: Int
    var held: Bool
    var delayWarned: Bool = false
    /// The data lives in `data/<ID>` rather than at the end of this record.
    var dataInFile: Bool
    var envelope: QueueEnvelope
}

struct RecipientStateRecord: Sendable, Hashable {
    var index: Int
    var change: RecipientChange
}

/// Dates are stored as whole microseconds since 1970; values kept in memory are rounded the
/// same way, so that the state after a restart equals the state before it.
enum QueueTime {
    static func microseconds(_ date: Date) -> Int64 {
        Int64((date.timeIntervalSince1970 * 1_000_000).rounded())
    }

    static func date(_ microseconds: Int64) -> Date {
        Date(timeIntervalSince1970: Double(microseconds) / 1_000_000)
    }

    static func rounded(_ date: Date?) -> Date? {
        date.map { self.date(microseconds($0)) }
    }
}

extension RecipientStatus {
    var code: UInt8 {
        switch self {
        case .pending: return 0
        case .deferred: return 1
        case .delivered: return 2
        case .bounced: return 3
        }
    }

    init?(code: UInt8) {
        switch code {
        case 0: self = .pending
        case 1: self = .deferred
        case 2: self = .delivered
        case 3: self = .bounced
        default: return nil
        }
    }
}

// MARK: - Encoding

extension LogRecord {
    /// Appends the framed record. `inlineData` is the message data of an inline MESSAGE record.
    func encode(into buffer: inout ByteBuffer, inlineData: ByteBuffer? = nil) {
        let start = buffer.writerIndex
        buffer.writeInteger(Self.magic)
        buffer.writeInteger(kind.rawValue)
        buffer.writeInteger(UInt32(0))  // payload length, set below
        let payloadStart = buffer.writerIndex
        switch self {
        case .message(let record):
            buffer.writeQueueID(record.id)
            buffer.writeInteger(record.arrival)
            buffer.writeInteger(
                UInt8((record.held ? 1 : 0) | (record.dataInFile ? 2 : 0) | (record.delayWarned ? 4 : 0)))
            buffer.writeInteger(UInt64(record.size))
            // The envelope section has its own length so that later versions can add fields.
            let lengthIndex = buffer.writerIndex
            buffer.writeInteger(UInt32(0))
            buffer.writeEnvelope(record.envelope)
            buffer.setInteger(UInt32(buffer.writerIndex - lengthIndex - 4), at: lengthIndex)
            if var data = inlineData { buffer.writeBuffer(&data) }
        case .state(let id, let changes):
            buffer.writeQueueID(id)
            buffer.writeInteger(UInt32(changes.count))
            for change in changes {
                buffer.writeInteger(UInt32(change.index))
                buffer.writeInteger(change.change.status.code)
                buffer.writeInteger(UInt32(clamping: change.change.attempts))
                buffer.writeOptionalTime(change.change.nextAttempt)
                buffer.writeOptionalQueueString(change.change.lastError)
            }
        case .hold(let id), .release(let id), .remove(let id), .delayWarned(let id):
            buffer.writeQueueID(id)
        }
        buffer.setInteger(UInt32(buffer.writerIndex - payloadStart), at: payloadStart - 4)
        let checked = start + 4 - buffer.readerIndex
        let crc = buffer.withUnsafeReadableBytes { bytes in
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[checked...]))
        }
        buffer.writeInteger(crc)
    }
}

extension ByteBuffer {
    fileprivate mutating func writeQueueID(_ id: QueueID) {
        writeInteger(id.sequence)
        writeInteger(id.random)
    }

    fileprivate mutating func writeQueueString(_ string: String) {
        let lengthIndex = writerIndex
        writeInteger(UInt32(0))
        let length = writeString(string)
        setInteger(UInt32(length), at: lengthIndex)
    }

    fileprivate mutating func writeOptionalQueueString(_ string: String?) {
        if let string {
            writeInteger(UInt8(1))
            writeQueueString(string)
        } else {
            writeInteger(UInt8(0))
        }
    }

    fileprivate mutating func writeOptionalTime(_ date: Date?) {
        if let date {
            writeInteger(UInt8(1))
            writeInteger(QueueTime.microseconds(date))
        } else {
            writeInteger(UInt8(0))
        }
    }

    fileprivate mutating func writeEnvelope(_ envelope: QueueEnvelope) {
        writeQueueString(envelope.sender)
        writeOptionalQueueString(envelope.bodyType)
        writeInteger(UInt8(envelope.smtpUTF8 ? 1 : 0))
        writeOptionalQueueString(envelope.dsnReturn)
        writeOptionalQueueString(envelope.envelopeID)
        writeOptionalQueueString(envelope.clientAddress)
        writeOptionalQueueString(envelope.heloName)
        writeOptionalQueueString(envelope.authenticatedUser)
        writeInteger(UInt32(envelope.recipients.count))
        for recipient in envelope.recipients {
            writeQueueString(recipient.address)
            writeOptionalQueueString(recipient.originalRecipient)
            writeInteger(UInt8(recipient.notify == nil ? 0 : 1))
            writeInteger(recipient.notify ?? 0)
            writeInteger(recipient.status.code)
            writeInteger(UInt32(clamping: recipient.attempts))
            writeOptionalTime(recipient.nextAttempt)
            writeOptionalQueueString(recipient.lastError)
        }
        // Added after the first version: a reader finds it only when the section is longer than
        // the recipients, so older records read as flags 0.
        writeInteger(UInt8(envelope.requireTLS ? 1 : 0))
    }
}

// MARK: - Decoding

extension LogRecord {
    enum Decoded: Equatable {
        /// A whole record of `length` octets (framing included).
        case record(LogRecord, length: Int)
        /// No more bytes.
        case end
        /// Not a valid record: a torn write, garbage or corruption.
        case invalid(String)
    }

    /// Decodes the record that starts at `offset` of `segment`.
    static func decode(_ segment: ByteBuffer, at offset: Int) -> Decoded {
        let available = segment.writerIndex - offset
        if available == 0 { return .end }
        guard available >= headerLength + trailerLength else { return .invalid("short header") }
        guard segment.getInteger(at: offset, as: UInt32.self) == magic else { return .invalid("bad magic") }
        let kindCode = segment.getInteger(at: offset + 4, as: UInt8.self)!
        let payloadLength = Int(segment.getInteger(at: offset + 5, as: UInt32.self)!)
        let length = headerLength + payloadLength + trailerLength
        guard length <= available else { return .invalid("record extends past the end") }
        let stored = segment.getInteger(at: offset + headerLength + payloadLength, as: UInt32.self)!
        let computed = segment.withUnsafeReadableBytes { bytes in
            let base = offset - segment.readerIndex + 4
            return CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[base..<(base + 5 + payloadLength)]))
        }
        guard stored == computed else { return .invalid("checksum mismatch") }
        guard let kind = Kind(rawValue: kindCode) else { return .invalid("unknown record type \(kindCode)") }
        var payload = segment.getSlice(at: offset + headerLength, length: payloadLength)!
        do {
            let record = try decodePayload(kind, &payload)
            return .record(record, length: length)
        } catch {
            return .invalid("malformed \(kind) record")
        }
    }

    struct Malformed: Error {}

    /// Decodes the part of a MESSAGE record before its inline data, as the index locates it
    /// (`IndexEntry.headLength`): the framing was checked, with the checksum, when the record
    /// was written or replayed, so only the fields are read here.
    static func decodeMessageHead(_ head: ByteBuffer) throws -> MessageRecord {
        var head = head
        guard head.readInteger(as: UInt32.self) == magic, head.readInteger(as: UInt8.self) == Kind.message.rawValue,
            head.readInteger(as: UInt32.self) != nil
        else { throw Malformed() }
        return try readMessageFields(try head.readQueueID(), &head)
    }

    private static func readMessageFields(_ id: QueueID, _ payload: inout ByteBuffer) throws -> MessageRecord {
        let arrival = try payload.readChecked(Int64.self)
        let flags = try payload.readChecked(UInt8.self)
        let size = Int(try payload.readChecked(UInt64.self))
        let envelopeLength = Int(try payload.readChecked(UInt32.self))
        guard var section = payload.readSlice(length: envelopeLength) else { throw Malformed() }
        return MessageRecord(
            id: id, arrival: arrival, size: size, held: flags & 1 != 0, delayWarned: flags & 4 != 0,
            dataInFile: flags & 2 != 0, envelope: try section.readEnvelope())
    }

    private static func decodePayload(_ kind: Kind, _ payload: inout ByteBuffer) throws -> LogRecord {
        let id = try payload.readQueueID()
        switch kind {
        case .message:
            let record = try readMessageFields(id, &payload)
            // Inline data fills the rest of the payload exactly.
            guard payload.readableBytes == (record.dataInFile ? 0 : record.size) else { throw Malformed() }
            return .message(record)
        case .state:
            let count = Int(try payload.readChecked(UInt32.self))
            // Each change takes at least 11 octets: refuse counts the payload cannot hold.
            guard count <= payload.readableBytes / 11 else { throw Malformed() }
            var changes: [RecipientStateRecord] = []
            for _ in 0..<count {
                let index = Int(try payload.readChecked(UInt32.self))
                guard let status = RecipientStatus(code: try payload.readChecked(UInt8.self)) else { throw Malformed() }
                let attempts = Int(try payload.readChecked(UInt32.self))
                let next = try payload.readOptionalTime()
                let error = try payload.readOptionalQueueString()
                changes.append(
                    RecipientStateRecord(
                        index: index,
                        change: RecipientChange(status: status, attempts: attempts, nextAttempt: next, lastError: error)
                    ))
            }
            return .state(id, changes)
        case .hold: return .hold(id)
        case .release: return .release(id)
        case .remove: return .remove(id)
        case .delayWarned: return .delayWarned(id)
        }
    }
}

extension ByteBuffer {
    fileprivate mutating func readChecked<T: FixedWidthInteger>(_: T.Type) throws -> T {
        guard let value = readInteger(as: T.self) else { throw LogRecord.Malformed() }
        return value
    }

    fileprivate mutating func readQueueID() throws -> QueueID {
        QueueID(sequence: try readChecked(UInt64.self), random: try readChecked(UInt16.self))
    }

    fileprivate mutating func readQueueString() throws -> String {
        let length = Int(try readChecked(UInt32.self))
        guard let string = readString(length: length) else { throw LogRecord.Malformed() }
        return string
    }

    fileprivate mutating func readOptionalQueueString() throws -> String? {
        try readChecked(UInt8.self) == 0 ? nil : try readQueueString()
    }

    fileprivate mutating func readOptionalTime() throws -> Date? {
        try readChecked(UInt8.self) == 0 ? nil : QueueTime.date(try readChecked(Int64.self))
    }

    fileprivate mutating func readEnvelope() throws -> QueueEnvelope {
        let sender = try readQueueString()
        let bodyType = try readOptionalQueueString()
        let smtpUTF8 = try readChecked(UInt8.self) != 0
        let dsnReturn = try readOptionalQueueString()
        let envelopeID = try readOptionalQueueString()
        let clientAddress = try readOptionalQueueString()
        let heloName = try readOptionalQueueString()
        let authenticatedUser = try readOptionalQueueString()
        let count = Int(try readChecked(UInt32.self))
        // Each recipient takes at least 20 octets: refuse counts the section cannot hold.
        guard count <= readableBytes / 20 else { throw LogRecord.Malformed() }
        var recipients: [QueuedRecipient] = []
        recipients.reserveCapacity(count)
        for _ in 0..<count {
            let address = try readQueueString()
            let original = try readOptionalQueueString()
            let hasNotify = try readChecked(UInt8.self) != 0
            let notify = try readChecked(UInt8.self)
            guard let status = RecipientStatus(code: try readChecked(UInt8.self)) else { throw LogRecord.Malformed() }
            let attempts = Int(try readChecked(UInt32.self))
            let next = try readOptionalTime()
            let error = try readOptionalQueueString()
            recipients.append(
                QueuedRecipient(
                    address: address, originalRecipient: original, notify: hasNotify ? notify : nil, status: status,
                    attempts: attempts, nextAttempt: next, lastError: error))
        }
        // Flags written by later versions; a record without them is from before REQUIRETLS.
        let flags = readableBytes > 0 ? try readChecked(UInt8.self) : 0
        return QueueEnvelope(
            sender: sender, recipients: recipients, bodyType: bodyType, smtpUTF8: smtpUTF8, dsnReturn: dsnReturn,
            envelopeID: envelopeID, clientAddress: clientAddress, heloName: heloName,
            authenticatedUser: authenticatedUser, requireTLS: flags & 1 != 0)
    }
}
