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
        chunk.withUnsafeReadableBytes { octets in
            for octet in octets { consume(octet, &output) }
        }
        flush(&output)
    }

    /// Canonicalises the next part of the body.
    public mutating func append(_ octets: some Sequence<UInt8>, to output: inout some DKIMCanonicalOutput) {
        for octet in octets { consume(octet, &output) }
        flush(&output)
    }

    /// The body has ended: writes what the end of the body decides.
    public mutating func finish(to output: inout some DKIMCanonicalOutput) {
        if pendingCR {
            pendingCR = false
            content(0x0D, &output)
        }
        if !atLineStart {
            // §3.4.3 and §3.4.4: a last line without CRLF gets one.
            emit(0x0D, &output)
            emit(0x0A, &output)
            atLineStart = true
        }
        pendingEmptyLines = 0
        if algorithm == .simple && length == 0 {
            // §3.4.3: "If there is no body or no trailing CRLF ... a CRLF is added"; an empty
            // body is one CRLF. Relaxed keeps an empty body empty.
            emit(0x0D, &output)
            emit(0x0A, &output)
        }
        flush(&output)
    }

    private mutating func consume(_ octet: UInt8, _ output: inout some DKIMCanonicalOutput) {
        if pendingCR {
            pendingCR = false
            if octet == 0x0A {
                endOfLine(&output)
                return
            }
            content(0x0D, &output)  // a bare CR is an ordinary octet
        }
        if octet == 0x0D {
            pendingCR = true
        } else {
            content(octet, &output)
        }
    }

    private mutating func content(_ octet: UInt8, _ output: inout some DKIMCanonicalOutput) {
        if algorithm == .relaxed && (octet == 0x20 || octet == 0x09) {
            pendingSpace = true  // §3.4.4: a run of WSP becomes one SP, none at the end of a line
            return
        }
        if atLineStart {
            while pendingEmptyLines > 0 {
                emit(0x0D, &output)
                emit(0x0A, &output)
                pendingEmptyLines -= 1
            }
            atLineStart = false
        }
        if pendingSpace {
            emit(0x20, &output)
            pendingSpace = false
        }
        emit(octet, &output)
    }

    private mutating func endOfLine(_ output: inout some DKIMCanonicalOutput) {
        pendingSpace = false
        if atLineStart {
            pendingEmptyLines += 1  // §3.4.3, §3.4.4: empty lines at the end are ignored
        } else {
            emit(0x0D, &output)
            emit(0x0A, &output)
            atLineStart = true
        }
    }

    private mutating func emit(_ octet: UInt8, _ output: inout some DKIMCanonicalOutput) {
        defer { length += 1 }
        if let limit, length >= limit { return }
        buffer.append(octet)
        if buffer.count >= Self.bufferSize { flush(&output) }
    }

    private mutating func flush(_ output: inout some DKIMCanonicalOutput) {
        guard !buffer.isEmpty else { return }
        buffer.withUnsafeBytes { output.write($0) }
        buffer.removeAll(keepingCapacity: true)
    }
}
