/// One `esmtp-param` of MAIL or RCPT (RFC 5321 §4.1.2):
///
///     esmtp-param   = esmtp-keyword ["=" esmtp-value]
///     esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
///     esmtp-value   = 1*(%d33-60 / %d62-126)   ; plus UTF8-non-ascii, RFC 6531 §3.3
struct ESMTPParameter {
    /// Upper-cased: keywords are case-insensitive.
    var keyword: String
    var value: ArraySlice<UInt8>?

    /// The parameters after a path, separated by one or more spaces.
    static func parseList(_ bytes: ArraySlice<UInt8>, hint: String) throws(SMTPCommandError) -> [ESMTPParameter] {
        var parameters: [ESMTPParameter] = []
        for token in bytes.split(separator: UInt8(ascii: " ")) {
            let equals = token.firstIndex(of: UInt8(ascii: "="))
            let keyword = token[..<(equals ?? token.endIndex)]
            guard let first = keyword.first, first.isLetDig,
                keyword.allSatisfy({ $0.isLetDig || $0 == UInt8(ascii: "-") })
            else { throw .syntax(hint) }
            var value: ArraySlice<UInt8>? = nil
            if let equals {
                let text = token[(equals + 1)...]
                guard !text.isEmpty,
                    text.allSatisfy({ (33...126).contains($0) && $0 != UInt8(ascii: "=") || $0 >= 0x80 })
                else { throw .syntax(hint) }
                value = text
            }
            let name = String(decoding: keyword.map(\.asciiUppercased), as: UTF8.self)
            if parameters.contains(where: { $0.keyword == name }) {
                throw .syntax("duplicate parameter \(name)")
            }
            parameters.append(ESMTPParameter(keyword: name, value: value))
        }
        return parameters
    }

    /// `KEYWORD=value` as the client wrote it, for the 555 reply.
    var written: String {
        guard let value else { return keyword }
        return "\(keyword)=\(String(decoding: value, as: UTF8.self))"
    }

    /// The value, required, or `.unsupportedParameter`.
    func requiredValue() throws(SMTPCommandError) -> ArraySlice<UInt8> {
        guard let value else { throw .unsupportedParameter(keyword) }
        return value
    }

    /// The value upper-cased, for the enumerated values (BODY, RET, NOTIFY).
    func upperCasedValue() throws(SMTPCommandError) -> String {
        String(decoding: try requiredValue().map(\.asciiUppercased), as: UTF8.self)
    }
}

/// xtext (RFC 3461 §4):
///
///     xtext    = *( xchar / hexchar )
///     xchar    = any ASCII CHAR between "!" (33) and "~" (126) inclusive,
///                except for "+" and "="
///     hexchar  = "+" 2(%x30-39 / %x41-46)   ; upper-case hex only
///
/// The decoded text must be valid UTF-8 (RFC 6533 allows UTF-8 under SMTPUTF8) without control
/// characters: `+0D+0A` would otherwise carry a line break into a DSN's headers.
public enum XText {
    /// `text` as xtext: `+`, `=`, controls, space and octets above 126 as `+XX` (a client
    /// passing ENVID and ORCPT on, RFC 3461 §4).
    public static func encode(_ text: String) -> String {
        var encoded = ""
        encoded.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            if (33...126).contains(byte), byte != UInt8(ascii: "+"), byte != UInt8(ascii: "=") {
                encoded.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                let hex = Array("0123456789ABCDEF".utf8)
                encoded += "+"
                encoded.unicodeScalars.append(Unicode.Scalar(hex[Int(byte >> 4)]))
                encoded.unicodeScalars.append(Unicode.Scalar(hex[Int(byte & 15)]))
            }
        }
        return encoded
    }

    static func decode(_ bytes: ArraySlice<UInt8>) -> String? {
        var decoded: [UInt8] = []
        decoded.reserveCapacity(bytes.count)
        var index = bytes.startIndex
        while index < bytes.endIndex {
            let byte = bytes[index]
            if byte == UInt8(ascii: "+") {
                guard index + 2 < bytes.endIndex, let high = upperHexValue(bytes[index + 1]),
                    let low = upperHexValue(bytes[index + 2])
                else { return nil }
                decoded.append(high << 4 | low)
                index += 3
            } else {
                guard byte != UInt8(ascii: "="), (33...126).contains(byte) || byte >= 0x80 else { return nil }
                decoded.append(byte)
                index += 1
            }
        }
        guard !decoded.contains(where: \.isControl) else { return nil }
        return String(validUTF8: decoded[...])
    }

    private static func upperHexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - 0x30
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - 0x41 + 10
        default: return nil
        }
    }
}

extension MailParameters {
    //  Mail-parameters = esmtp-param *(SP esmtp-param)
    //  size-param  = "SIZE=" 1*20DIGIT                          ; RFC 1870 §3
    //  body-param  = "BODY=" ("7BIT" / "8BITMIME" / "BINARYMIME") ; RFC 6152, RFC 3030
    //  "SMTPUTF8"                                                ; RFC 6531 §3.4
    //  ret-param   = "RET=" ("FULL" / "HDRS")                     ; RFC 3461 §4.3
    //  envid-param = "ENVID=" xtext                              ; RFC 3461 §4.4
    //  auth-param  = "AUTH=" (xtext / "<>")                      ; RFC 4954 §5
    //  "REQUIRETLS"                                              ; RFC 8689 §3
    static func parse(_ bytes: ArraySlice<UInt8>) throws(SMTPCommandError) -> MailParameters {
        var result = MailParameters()
        for parameter in try ESMTPParameter.parseList(bytes, hint: "MAIL FROM:<address> [parameters]") {
            switch parameter.keyword {
            case "SIZE":
                let digits = try parameter.requiredValue()
                guard digits.count <= SMTPLimits.sizeDigits, digits.allSatisfy(\.isDIGIT) else {
                    throw .unsupportedParameter(parameter.written)
                }
                // A value beyond Int is over any limit: saturate instead of failing the parse.
                var size = 0
                for digit in digits {
                    let (times10, overflow1) = size.multipliedReportingOverflow(by: 10)
                    let (sum, overflow2) = times10.addingReportingOverflow(Int(digit - 0x30))
                    if overflow1 || overflow2 {
                        size = Int.max
                        break
                    }
                    size = sum
                }
                result.size = size
            case "BODY":
                guard let body = BodyType(rawValue: try parameter.upperCasedValue()) else {
                    throw .unsupportedParameter(parameter.written)
                }
                result.body = body
            case "SMTPUTF8":
                guard parameter.value == nil else { throw .unsupportedParameter(parameter.written) }
                result.smtpUTF8 = true
            case "REQUIRETLS":
                guard parameter.value == nil else { throw .unsupportedParameter(parameter.written) }
                result.requireTLS = true
            case "RET":
                guard let ret = DSNReturn(rawValue: try parameter.upperCasedValue()) else {
                    throw .unsupportedParameter(parameter.written)
                }
                result.ret = ret
            case "ENVID":
                let value = try parameter.requiredValue()
                guard value.count <= SMTPLimits.envelopeIDLength, let envelopeID = XText.decode(value) else {
                    throw .unsupportedParameter(parameter.written)
                }
                result.envelopeID = envelopeID
            case "AUTH":
                let value = try parameter.requiredValue()
                if value.elementsEqual("<>".utf8) {
                    result.auth = "<>"
                } else {
                    guard let auth = XText.decode(value) else { throw .unsupportedParameter(parameter.written) }
                    result.auth = auth
                }
            default:
                throw .unsupportedParameter(parameter.keyword)
            }
        }
        return result
    }
}

extension RecipientParameters {
    //  Rcpt-parameters = esmtp-param *(SP esmtp-param)
    //  notify-esmtp-value = "NEVER" / 1#notify-list-element      ; RFC 3461 §4.1
    //  notify-list-element = "SUCCESS" / "FAILURE" / "DELAY"
    //  orcpt-parameter = "ORCPT=" original-recipient-address     ; RFC 3461 §4.2
    //  original-recipient-address = addr-type ";" xtext
    //  addr-type = atom
    static func parse(_ bytes: ArraySlice<UInt8>) throws(SMTPCommandError) -> RecipientParameters {
        var result = RecipientParameters()
        for parameter in try ESMTPParameter.parseList(bytes, hint: "RCPT TO:<address> [parameters]") {
            switch parameter.keyword {
            case "NOTIFY":
                let value = try parameter.upperCasedValue()
                if value == "NEVER" {
                    result.notify = .never
                    continue
                }
                var notify: DSNNotify = []
                for element in value.split(separator: ",", omittingEmptySubsequences: false) {
                    switch element {
                    case "SUCCESS": notify.insert(.success)
                    case "FAILURE": notify.insert(.failure)
                    case "DELAY": notify.insert(.delay)
                    default: throw .unsupportedParameter(parameter.written)
                    }
                }
                result.notify = notify
            case "ORCPT":
                let value = try parameter.requiredValue()
                guard value.count <= SMTPLimits.originalRecipientLength,
                    let semicolon = value.firstIndex(of: UInt8(ascii: ";"))
                else { throw .unsupportedParameter(parameter.written) }
                let addressType = value[..<semicolon]
                guard !addressType.isEmpty, addressType.allSatisfy({ Mailbox.isAtext($0) && $0 < 0x80 }),
                    let address = XText.decode(value[(semicolon + 1)...]), !address.isEmpty
                else { throw .unsupportedParameter(parameter.written) }
                result.originalRecipient = OriginalRecipient(
                    addressType: String(decoding: addressType, as: UTF8.self), address: address)
            default:
                throw .unsupportedParameter(parameter.keyword)
            }
        }
        return result
    }
}
