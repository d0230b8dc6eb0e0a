extension MailDomain {
    /// Parses a domain or an address literal (RFC 5321 §4.1.2, §4.1.3):
    ///
    ///     Domain          = sub-domain *("." sub-domain)
    ///     sub-domain      = Let-dig [Ldh-str] / U-label        ; U-label: RFC 6531 §3.3
    ///     Ldh-str         = *( ALPHA / DIGIT / "-" ) Let-dig
    ///     address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
    ///                             General-address-literal ) "]"
    ///
    /// A trailing dot is an error: `user@example.test.` names no host in SMTP, and accepting it
    /// would let `example.test.` slip past a comparison with `example.test`.
    public static func parse(_ text: some StringProtocol) throws(SMTPCommandError) -> MailDomain {
        try parse(bytes: Array(text.utf8)[...])
    }

    static func parse(bytes: ArraySlice<UInt8>) throws(SMTPCommandError) -> MailDomain {
        guard !bytes.isEmpty else { throw .badAddress("empty domain") }
        guard bytes.count <= SMTPLimits.domainLength else { throw .badAddress("domain too long") }
        if bytes.first == UInt8(ascii: "[") {
            guard bytes.count >= 3, bytes.last == UInt8(ascii: "]") else {
                throw .badAddress("unterminated address literal")
            }
            return try parseAddressLiteral(bytes.dropFirst().dropLast())
        }
        try validateDomainName(bytes)
        guard let name = String(validUTF8: bytes) else { throw .badAddress("invalid UTF-8 in domain") }
        return .name(name)
    }

    /// Checks `Domain = sub-domain *("." sub-domain)`; labels of octets ≥ 0x80 are U-labels
    /// (RFC 6531 §3.3), whose IDNA validity is left to the DNS lookup.
    static func validateDomainName(_ bytes: ArraySlice<UInt8>) throws(SMTPCommandError) {
        var labelStart = bytes.startIndex
        var index = bytes.startIndex
        while true {
            let atEnd = index == bytes.endIndex
            if atEnd || bytes[index] == UInt8(ascii: ".") {
                let label = bytes[labelStart..<index]
                if label.isEmpty {
                    throw .badAddress(
                        atEnd && index != bytes.startIndex ? "trailing dot in domain" : "empty label in domain")
                }
                // RFC 1035 §2.3.4: a label is at most 63 octets.
                guard label.count <= 63 else { throw .badAddress("domain label too long") }
                guard label.first != UInt8(ascii: "-"), label.last != UInt8(ascii: "-") else {
                    throw .badAddress("hyphen at the edge of a domain label")
                }
                if atEnd { return }
                labelStart = index + 1
            } else {
                let byte = bytes[index]
                guard byte.isLetDig || byte == UInt8(ascii: "-") || byte >= 0x80 else {
                    throw .badAddress("invalid character in domain")
                }
            }
            index += 1
        }
    }

    //  IPv4-address-literal    = Snum 3("."  Snum)
    //  IPv6-address-literal    = "IPv6:" IPv6-addr
    //  General-address-literal = Standardized-tag ":" 1*dcontent
    //  Standardized-tag        = Ldh-str
    //  dcontent                = %d33-90 / %d94-126
    static func parseAddressLiteral(_ bytes: ArraySlice<UInt8>) throws(SMTPCommandError) -> MailDomain {
        guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")) else {
            guard let quad = parseIPv4(bytes) else { throw .badAddress("invalid IPv4 address literal") }
            return .ipv4Literal(quad)
        }
        let tag = bytes[..<colon]
        let content = bytes[(colon + 1)...]
        if tag.equalsCaseInsensitive("IPV6") {
            guard isValidIPv6(content) else { throw .badAddress("invalid IPv6 address literal") }
            return .ipv6Literal(String(decoding: content, as: UTF8.self))
        }
        guard let tagLast = tag.last, tagLast.isLetDig,
            tag.allSatisfy({ $0.isLetDig || $0 == UInt8(ascii: "-") }),
            !content.isEmpty,
            content.allSatisfy({ (33...90).contains($0) || (94...126).contains($0) })
        else { throw .badAddress("invalid address literal") }
        return .generalLiteral(
            tag: String(decoding: tag, as: UTF8.self), content: String(decoding: content, as: UTF8.self))
    }

    //  Snum = 1*3DIGIT   ; representing a decimal integer value in the range 0 through 255
    /// The dotted quad in canonical form (leading zeros dropped, so that `[127.000.0.1]` and
    /// `[127.0.0.1]` compare equal), or nil when `bytes` is not `Snum 3("." Snum)`.
    static func parseIPv4(_ bytes: ArraySlice<UInt8>) -> String? {
        var numbers: [Int] = []
        numbers.reserveCapacity(4)
        var value = 0
        var digits = 0
        for byte in bytes {
            if byte.isDIGIT {
                digits += 1
                guard digits <= 3 else { return nil }
                value = value * 10 + Int(byte - 0x30)
            } else if byte == UInt8(ascii: ".") {
                guard digits > 0, value <= 255, numbers.count < 3 else { return nil }
                numbers.append(value)
                value = 0
                digits = 0
            } else {
                return nil
            }
        }
        guard digits > 0, value <= 255, numbers.count == 3 else { return nil }
        numbers.append(value)
        return numbers.map(String.init).joined(separator: ".")
    }

    //  IPv6-addr      = IPv6-full / IPv6-comp / IPv6v4-full / IPv6v4-comp
    //  IPv6-hex       = 1*4HEXDIG
    //  IPv6-full      = IPv6-hex 7(":" IPv6-hex)
    //  IPv6-comp      = [IPv6-hex *5(":" IPv6-hex)] "::" [IPv6-hex *5(":" IPv6-hex)]
    //                 ; No more than 6 groups in addition to the "::" may be present.
    //  IPv6v4-full    = IPv6-hex 5(":" IPv6-hex) ":" IPv4-address-literal
    //  IPv6v4-comp    = [IPv6-hex *3(":" IPv6-hex)] "::"
    //                   [IPv6-hex *3(":" IPv6-hex) ":"] IPv4-address-literal
    //                 ; No more than 4 groups in addition to the "::" and
    //                 ; IPv4-address-literal may be present.
    static func isValidIPv6(_ bytes: ArraySlice<UInt8>) -> Bool {
        var head = bytes
        var tail: ArraySlice<UInt8>? = nil
        var index = bytes.startIndex
        while index + 1 < bytes.endIndex {
            if bytes[index] == UInt8(ascii: ":") && bytes[index + 1] == UInt8(ascii: ":") {
                guard tail == nil else { return false }
                head = bytes[bytes.startIndex..<index]
                tail = bytes[(index + 2)...]
                index += 2
            } else {
                index += 1
            }
        }
        // Counts 16-bit units of one side; an IPv4 address (2 units) may only end the address.
        func units(_ part: ArraySlice<UInt8>, mayEndWithIPv4: Bool) -> Int? {
            if part.isEmpty { return 0 }
            let groups = part.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
            var total = 0
            for (position, group) in groups.enumerated() {
                if position == groups.count - 1, mayEndWithIPv4, group.contains(UInt8(ascii: ".")) {
                    guard parseIPv4(group) != nil else { return nil }
                    total += 2
                } else {
                    guard (1...4).contains(group.count), group.allSatisfy(\.isHEXDIG) else { return nil }
                    total += 1
                }
            }
            return total
        }
        if let tail {
            guard let headUnits = units(head, mayEndWithIPv4: false),
                let tailUnits = units(tail, mayEndWithIPv4: true)
            else { return false }
            return headUnits + tailUnits <= 6
        }
        return units(head, mayEndWithIPv4: true) == 8
    }
}
