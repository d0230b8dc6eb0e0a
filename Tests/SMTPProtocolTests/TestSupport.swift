import NIOCore

extension ByteBuffer {
    /// The readable bytes as an array, for comparisons in tests.
    var bytes: [UInt8] { Array(readableBytesView) }
}

/// Deterministic generator for the random multi-split tests (SplitMix64), so failures repeat.
struct SeededRandom: RandomNumberGenerator {
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

/// Every way to cut `input` once, plus `randomCount` random cuts into several pieces.
func splits(of input: [UInt8], randomCount: Int = 20) -> [[[UInt8]]] {
    var result: [[[UInt8]]] = [[input]]
    if input.count > 1 {
        for cut in 1..<input.count {
            result.append([Array(input[..<cut]), Array(input[cut...])])
        }
    }
    var random = SeededRandom(seed: UInt64(input.count) &* 7919)
    for _ in 0..<randomCount where input.count > 2 {
        var cuts = Set<Int>()
        for _ in 0..<Int.random(in: 2...6, using: &random) {
            cuts.insert(Int.random(in: 1..<input.count, using: &random))
        }
        var pieces: [[UInt8]] = []
        var start = 0
        for cut in cuts.sorted() {
            pieces.append(Array(input[start..<cut]))
            start = cut
        }
        pieces.append(Array(input[start...]))
        result.append(pieces)
    }
    // Byte by byte.
    result.append(input.map { [$0] })
    return result
}
