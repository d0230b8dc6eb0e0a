/// Punycode (RFC 3492) encoding of U-labels into A-labels (`xn--…`, RFC 5890 §2.3.2.1), enough
/// to look up and compare internationalized domain names: the public suffix list is written in
/// UTF-8, mail and DNS use A-labels.
///
/// Only lower-casing is applied before encoding, not the full IDNA2008 mapping (RFC 5895) or
/// Unicode normalization: the public suffix list and registries publish lower-case NFC labels,
/// and a name in another form simply does not match.
enum Punycode {
    // RFC 3492 §5: the parameters for IDNA.
    private static let base = 36
    private static let tMin = 1
    private static let tMax = 26
    private static let skew = 38
    private static let damp = 700
    private static let initialBias = 72
    private static let initialN = 0x80

    /// The name with every non-ASCII label lower-cased and encoded as an A-label, the ASCII
    /// labels lower-cased; nil when a label cannot be encoded or the result is too long for a
    /// label (63 octets).
    static func asciiName(_ name: String) -> String? {
        var labels: [String] = []
        for label in name.lowercased().split(separator: ".", omittingEmptySubsequences: false) {
            if label.unicodeScalars.allSatisfy(\.isASCII) {
                labels.append(String(label))
            } else {
                guard let encoded = encode(String(label)), encoded.utf8.count + 4 <= 63 else { return nil }
                labels.append("xn--" + encoded)
            }
        }
        return labels.joined(separator: ".")
    }

    /// RFC 3492 §6.3: the Punycode form of `label`, without the `xn--` prefix.
    static func encode(_ label: String) -> String? {
        // An A-label has at most 63 octets, so no longer U-label can fit; this also keeps the
        // quadratic loop below small whatever the input.
        guard label.unicodeScalars.count <= 63 else { return nil }
        let input = label.unicodeScalars.map { Int($0.value) }
        var output = input.filter { $0 < 0x80 }.map { Character(Unicode.Scalar(UInt8($0))) }
        let basicCount = output.count
        var handled = basicCount
        if basicCount > 0 { output.append("-") }
        var n = initialN
        var delta = 0
        var bias = initialBias
        while handled < input.count {
            guard let next = input.filter({ $0 >= n }).min() else { return nil }
            // Overflow cannot happen for real labels; refuse rather than trap on absurd ones.
            let (step, overflow) = (next - n).multipliedReportingOverflow(by: handled + 1)
            guard !overflow, delta <= Int(Int32.max) - step else { return nil }
            delta += step
            n = next
            for code in input {
                if code < n { delta += 1 }
                if code == n {
                    var q = delta
                    var k = base
                    while true {
                        let t = k <= bias ? tMin : (k >= bias + tMax ? tMax : k - bias)
                        if q < t { break }
                        output.append(digit(t + (q - t) % (base - t)))
                        q = (q - t) / (base - t)
                        k += base
                    }
                    output.append(digit(q))
                    bias = adapt(delta, handled + 1, handled == basicCount)
                    delta = 0
                    handled += 1
                }
            }
            delta += 1
            n += 1
        }
        return String(output)
    }

    private static func digit(_ value: Int) -> Character {
        Character(Unicode.Scalar(UInt8(value < 26 ? 0x61 + value : 0x30 + value - 26)))
    }

    // RFC 3492 §6.1
    private static func adapt(_ delta: Int, _ count: Int, _ first: Bool) -> Int {
        var delta = first ? delta / damp : delta / 2
        delta += delta / count
        var k = 0
        while delta > ((base - tMin) * tMax) / 2 {
            delta /= base - tMin
            k += base
        }
        return k + (base - tMin + 1) * delta / (delta + skew)
    }
}
