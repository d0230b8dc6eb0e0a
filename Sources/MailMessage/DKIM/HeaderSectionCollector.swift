import NIOCore

/// Splits a message arriving in chunks of any size into its header section, which it keeps (up
/// to `limit` octets), and its body, which it hands back chunk by chunk without keeping it.
/// The header section ends at the first empty line (RFC 5322 §2.1); that line belongs to neither.
public struct HeaderSectionCollector: Sendable {
    /// The most header octets kept; more sets `overflowed` and keeps nothing further.
    public let limit: Int
    /// The header section seen so far, without the empty line. Complete once `isComplete`.
    public private(set) var headerSection: [UInt8] = []
    /// The empty line has been seen: every later octet is body.
    public private(set) var isComplete = false
    /// The header section is longer than `limit`; `headerSection` holds only its beginning.
    public private(set) var overflowed = false

    /// Octets of the current line so far, its CR included.
    private var lineLength = 0
    private var previousWasCR = false

    public init(limit: Int) {
        self.limit = limit
    }

    /// Takes the next chunk; returns the part of it that is body (nil while still in the header
    /// section, possibly empty when the header section ends exactly at the chunk's end).
    public mutating func append(_ chunk: ByteBuffer) -> ByteBuffer? {
        if isComplete { return chunk }
        let headerOctets: Int? = chunk.withUnsafeReadableBytes { octets in
            for (index, octet) in octets.enumerated() {
                if octet == 0x0A && previousWasCR {
                    if lineLength == 1 { return index + 1 }  // the empty line: just CR LF
                    lineLength = 0
                    previousWasCR = false
                    continue
                }
                previousWasCR = octet == 0x0D
                lineLength += 1
            }
            return nil
        }
        let kept = headerOctets ?? chunk.readableBytes
        keep(chunk.getSlice(at: chunk.readerIndex, length: kept)!)
        guard let headerOctets else { return nil }
        isComplete = true
        if !overflowed { headerSection.removeLast(2) }  // the empty line's CR LF
        return chunk.getSlice(at: chunk.readerIndex + headerOctets, length: chunk.readableBytes - headerOctets)!
    }

    /// The message ended without an empty line: all of it was header section (RFC 5322 §3.5
    /// makes the body optional).
    public mutating func finish() {
        guard !isComplete else { return }
        isComplete = true
        if headerSection.count > limit {
            overflowed = true
            headerSection.removeLast(headerSection.count - limit)
        }
    }

    private mutating func keep(_ octets: ByteBuffer) {
        var octets = octets
        let room = max(0, limit + 2 - headerSection.count)  // + the empty line, removed at the end
        if octets.readableBytes > room {
            overflowed = true
            octets.moveWriterIndex(to: octets.readerIndex + room)
        }
        headerSection.append(contentsOf: octets.readableBytesView)
    }
}
