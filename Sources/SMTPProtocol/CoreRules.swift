/// The core rules of ABNF (RFC 5234 Appendix B.1) that the SMTP grammar builds on, as octet
/// tests for parsing straight from bytes.
extension UInt8 {
    /// `ALPHA = %x41-5A / %x61-7A`
    var isALPHA: Bool { (self | 0x20) >= 0x61 && (self | 0x20) <= 0x7A }
    /// `DIGIT = %x30-39`
    var isDIGIT: Bool { self >= 0x30 && self <= 0x39 }
    /// `HEXDIG`, both cases (ABNF strings are case-insensitive).
    var isHEXDIG: Bool { isDIGIT || ((self | 0x20) >= 0x61 && (self | 0x20) <= 0x66) }
    /// `Let-dig = ALPHA / DIGIT` (RFC 5321 §4.1.2)
    var isLetDig: Bool { isALPHA || isDIGIT }
    /// Octets no command line may hold: `CTL` (%x00-1F / %x7F), HTAB included.
    var isControl: Bool { self < 0x20 || self == 0x7F }
    /// ASCII upper case of a letter; other octets unchanged.
    var asciiUppercased: UInt8 { (self >= 0x61 && self <= 0x7A) ? self - 0x20 : self }
}

extension Collection where Element == UInt8 {
    /// ASCII case-insensitive comparison with an upper-case ASCII literal.
    func equalsCaseInsensitive(_ upperCaseLiteral: StaticString) -> Bool {
        guard count == upperCaseLiteral.utf8CodeUnitCount else { return false }
        return upperCaseLiteral.withUTF8Buffer { literal in
            zip(self, literal).allSatisfy { $0.asciiUppercased == $1 }
        }
    }

    /// Whether the collection starts with the upper-case ASCII literal, ignoring case.
    func hasCaseInsensitivePrefix(_ upperCaseLiteral: StaticString) -> Bool {
        guard count >= upperCaseLiteral.utf8CodeUnitCount else { return false }
        return upperCaseLiteral.withUTF8Buffer { literal in
            zip(self, literal).allSatisfy { $0.asciiUppercased == $1 }
        }
    }
}

extension String {
    /// The string for `bytes` when they are valid UTF-8 (RFC 3629), else nil.
    init?(validUTF8 bytes: ArraySlice<UInt8>) {
        guard let string = String(validating: bytes, as: UTF8.self) else { return nil }
        self = string
    }
}
