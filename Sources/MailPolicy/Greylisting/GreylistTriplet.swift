import Crypto

/// The 128-bit name of a greylist entry: for a triplet the first half of a SHA-256 digest (so
/// entries have one size in memory and on disk, and the store holds no addresses), for a
/// client network the network's address bits.
struct GreylistKey: Hashable, Sendable {
    var high: UInt64
    var low: UInt64
}

/// How a (client, sender, recipient) attempt becomes a greylist triplet.
enum GreylistTriplet {
    /// The client's network, as postgrey's `--lookup-by-subnet` groups it: an IPv4 /24 or an
    /// IPv6 /64. Big senders retry from another address of the same pool, and a /64 is one
    /// site (RFC 6177); an IPv4-mapped address counts as IPv4.
    static func network(of client: IPAddress) -> GreylistKey {
        switch client.unmappedIPv4 ?? client {
        case .v4(let value): GreylistKey(high: 0, low: 0xFFFF_0000_0000 | UInt64(value & 0xFFFF_FF00))
        case .v6(let high, _): GreylistKey(high: high, low: 0)
        }
    }

    /// The sender as the triplet uses it, so that one correspondent keeps one triplet while its
    /// bounce addresses change with every message:
    /// - lower case throughout (local parts are case-sensitive in RFC 5321 §2.4, but no real
    ///   sender sends the same mail under two spellings);
    /// - a BATV tag (`prvs=tag=user@…`) removed: it changes daily (draft-levine-smtp-batv-01);
    /// - a `+detail` removed, as mailing lists put the bounce id there (postgrey does the same);
    /// - each number standing alone as a word replaced by `#` (postgrey's VERP rule), so that
    ///   `bounce-12345-678@…` and `bounce-12346-679@…` are one sender.
    /// The null sender `<>` (bounces, RFC 5321 §4.5.5) is the empty string.
    static func normalisedSender(_ sender: String) -> String {
        let address = sender.lowercased()
        guard let at = address.lastIndex(of: "@") else { return address }
        var local = address[..<at]
        if local.hasPrefix("prvs="), let equals = local.dropFirst(5).firstIndex(of: "=") {
            local = local[local.index(after: equals)...]
        }
        if let plus = local.firstIndex(of: "+") { local = local[..<plus] }
        return replacingNumbers(local) + address[at...]
    }

    /// Every maximal run of ASCII digits with no letter, digit or `_` on either side (a Perl
    /// `\b\d+\b`) becomes `#`.
    static func replacingNumbers(_ text: Substring) -> String {
        func isWord(_ character: Character?) -> Bool {
            guard let character else { return false }
            return character.isLetter || character.isNumber || character == "_"
        }
        var result = ""
        var index = text.startIndex
        var previous: Character? = nil
        while index < text.endIndex {
            let character = text[index]
            guard character.isASCII, character.isWholeNumber else {
                result.append(character)
                previous = character
                index = text.index(after: index)
                continue
            }
            var end = index
            while end < text.endIndex, text[end].isASCII, text[end].isWholeNumber { end = text.index(after: end) }
            let next = end < text.endIndex ? text[end] : nil
            if isWord(previous) || isWord(next) {
                result += text[index..<end]
            } else {
                result.append("#")
            }
            previous = text[text.index(before: end)]
            index = end
        }
        return result
    }

    /// The key of a triplet: the network's bits and the two addresses, each address preceded
    /// by its length so that no two triplets share an input.
    static func key(client: IPAddress, sender: String, recipient: String) -> GreylistKey {
        let network = network(of: client)
        var input: [UInt8] = []
        for half in [network.high, network.low] {
            for shift in stride(from: 56, through: 0, by: -8) { input.append(UInt8(truncatingIfNeeded: half >> shift)) }
        }
        for part in [normalisedSender(sender), recipient.lowercased()] {
            let bytes = Array(part.utf8)
            let count = UInt32(truncatingIfNeeded: bytes.count)
            for shift in stride(from: 24, through: 0, by: -8) {
                input.append(UInt8(truncatingIfNeeded: count >> shift))
            }
            input += bytes
        }
        let digest = Array(SHA256.hash(data: input))
        let high = digest[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let low = digest[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return GreylistKey(high: high, low: low)
    }
}
