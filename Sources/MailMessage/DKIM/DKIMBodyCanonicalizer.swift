import NIOCore

/// Where a `DKIMBodyCanonicalizer` writes canonical octets: a hash function, or an array in tests.
public protocol DKIMCanonicalOutput {
    mutating func write(_ octets: UnsafeRawBufferPointer)
}

/// The body canonicalisation of RFC 6376 §3.4.3 (simple) and §3.4.4 (relaxed), fed the body in
/// chunks of any size and split. It holds a constant amount of state: empty lines are counted,
/// not stored, until a later non-empty line shows they were not at the end of the body.
/// With a `limit` (the `l=` tag, §3.5) it writes no more than that many octets but goes on
/// counting, so that a body shorter than `l=` can be told.
public struct DKIMBodyCanonicalizer: Sendable {
    public let algorithm: DKIMCanonicalization
    public let limit: Int?
    /// Octets of the canonical body so far, including any past `limit`. Final after `finish`.
    public private(set) var length = 0

    /// CRLFs of empty lines not yet written: they vanish if the body ends here.
    private var pendingEmptyLines = 0
    /// Relaxed: WSP seen in the current line and not yet written (becomes one SP, or nothing at
    /// the end of the line).
    private var pendingSpace = false
    /// The previous chunk ended with a CR: its meaning depends on the next octet.
    private var pendingCR = false
    /// Nothing of the current line has been written yet.
    private var atLineStart = true
    private var buffer: [UInt8] = []
    private static let bufferSize = 4096

    public init(_ algorithm: DKIMCanonicalization, limit: Int? = nil) {
        self.algorithm = algorithm
        self.limit = limit
    }

    /// Canonicalises the next part of the body.
    public mutating func append(_ chunk: ByteBuffer, to output: inout some DKIMCanonicalOutput) {
        chunk.withUnsafeReadableBytes { append($0, to: &output) }
    }

    /// Canonicalises the next part of the body.
    public mutating func append(_ octets: some Sequence<UInt8>, to output: inout some DKIMCanonicalOutput) {
        Array(octets).withUnsafeBytes { append($0, to: &output) }
    }

    /// The body has ended: writes what the end of the body decides.
    public mutating func finish(to output: inout some DKIMCanonicalOutput) {
        if pendingCR {
            while !content(0x0D) { flush(&output) }  // a CR at the very end is an ordinary octet
            pendingCR = false
        }
        if !atLineStart {
            // §3.4.3 and §3.4.4: a last line without CRLF gets one.
            emit(0x0D)
            emit(0x0A)
            atLineStart = true
        }
        pendingEmptyLines = 0
        if algorithm == .simple && length == 0 {
            // §3.4.3: "If there is no body or no trailing CRLF ... a CRLF is added"; an empty
            // body is one CRLF. Relaxed keeps an empty body empty.
            emit(0x0D)
            emit(0x0A)
        }
        flush(&output)
    }

    private mutating func append(_ octets: UnsafeRawBufferPointer, to output: inout some DKIMCanonicalOutput) {
        var index = 0
        while index < octets.count {
            index = fill(octets, from: index)
            flush(&output)
        }
    }

    /// Canonicalises from `start` until the octets or the buffer's room run out; returns where
    /// it stopped. Kept free of the output's type so that the per-octet path is plain code.
    private mutating func fill(_ octets: UnsafeRawBufferPointer, from start: Int) -> Int {
        var index = start
        while index < octets.count && buffer.count < Self.bufferSize {
            guard consume(octets[index]) else { break }
            index += 1
        }
        return index
    }

    /// False when the buffer filled before the octet was dealt with; it is offered again.
    private mutating func consume(_ octet: UInt8) -> Bool {
        if pendingCR {
            if octet == 0x0A {
                pendingCR = false
                endOfLine()
                return true
            }
            guard content(0x0D) else { return false }  // a bare CR is an ordinary octet
            pendingCR = false
        }
        if octet == 0x0D {
            pendingCR = true
            return true
        }
        return content(octet)
    }

    private mutating func content(_ octet: UInt8) -> Bool {
        if algorithm == .relaxed && (octet == 0x20 || octet == 0x09) {
            pendingSpace = true  // §3.4.4: a run of WSP becomes one SP, none at the end of a line
            return true
        }
        if atLineStart {
            // The empty lines were not at the end after all; written as the buffer has room.
            while pendingEmptyLines > 0 {
                guard buffer.count + 2 <= Self.bufferSize else { return false }
                emit(0x0D)
                emit(0x0A)
                pendingEmptyLines -= 1
            }
            atLineStart = false
        }
        if pendingSpace {
            emit(0x20)
            pendingSpace = false
        }
        emit(octet)
        return true
    }

    private mutating func endOfLine() {
        pendingSpace = false
        if atLineStart {
            pendingEmptyLines += 1  // §3.4.3, §3.4.4: empty lines at the end are ignored
        } else {
            emit(0x0D)
            emit(0x0A)
            atLineStart = true
        }
    }

    private mutating func emit(_ octet: UInt8) {
        defer { length += 1 }
        if let limit, length >= limit { return }
        buffer.append(octet)
    }

    private mutating func flush(_ output: inout some DKIMCanonicalOutput) {
        guard !buffer.isEmpty else { return }
        buffer.withUnsafeBytes { output.write($0) }
        buffer.removeAll(keepingCapacity: true)
    }
}
