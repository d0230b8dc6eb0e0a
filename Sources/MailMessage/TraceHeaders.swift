import SMTPProtocol

/// The trace fields Tern writes (RFC 5321 §4.4, RFC 5322 §3.6.7).
public enum TraceHeaders {
    /// How the message came in: the `with` clause of `Received:` (RFC 3848).
    public enum ReceivedProtocol: String, Sendable {
        case smtp = "SMTP"
        case esmtp = "ESMTP"
        case esmtps = "ESMTPS"
        case esmtpa = "ESMTPA"
        case esmtpsa = "ESMTPSA"
        case utf8smtp = "UTF8SMTP"
        case utf8smtps = "UTF8SMTPS"
        case utf8smtpa = "UTF8SMTPA"
        case utf8smtpsa = "UTF8SMTPSA"
        case local = "local"
    }

    /// One `Received:` field, folded over several lines, ending in CRLF:
    ///
    ///     Received: from helo.example (mail.example [192.0.2.1])
    ///     	by mx.example.test (Tern) with ESMTPS (using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)
    ///     	id 0123ABCD
    ///     	for <rcpt@example.test>; Mon, 23 Nov 2026 10:00:00 +0000
    ///
    /// `reverseName` nil means the client's address has no (confirmed) name: `unknown`, as
    /// Postfix writes it. `recipient` is named only when the message has exactly one, so that a
    /// Bcc recipient is never revealed to the others.
    public static func received(
        heloName: String?, reverseName: String?, clientAddress: String?, hostname: String,
        protocol: ReceivedProtocol, tls: String? = nil, queueID: String, recipient: String?,
        secondsSince1970: Int
    ) -> String {
        var field = "Received: "
        if let clientAddress {
            let literal = clientAddress.contains(":") ? "IPv6:\(clientAddress)" : clientAddress
            field +=
                "from \(sanitize(heloName ?? "unknown")) (\(sanitize(reverseName ?? "unknown")) [\(literal)])\r\n\t"
        }
        field += "by \(hostname) (Tern) with \(`protocol`.rawValue)"
        if let tls { field += " (\(sanitize(tls)))\r\n\t" } else { field += " " }
        field += "id \(queueID)"
        if let recipient { field += "\r\n\tfor <\(sanitize(recipient))>" }
        field += ";\r\n\t\(MessageDate.format(secondsSince1970: secondsSince1970))\r\n"
        return field
    }

    /// `Return-Path: <sender>` (RFC 5321 §4.4), added at final delivery.
    public static func returnPath(_ sender: String) -> String {
        "Return-Path: <\(sanitize(sender))>\r\n"
    }

    /// `Delivered-To: address`, added at local delivery (the address as received, with any
    /// `+detail` kept) so that loops through forwarding can be seen.
    public static func deliveredTo(_ address: String) -> String {
        "Delivered-To: \(sanitize(address))\r\n"
    }

    /// Client-supplied text inside a header must not end the header or break its structure:
    /// controls become `?`, and parentheses (which would unbalance the comment) too.
    static func sanitize(_ text: String) -> String {
        var result = ""
        result.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            if scalar.value < 0x20 || scalar.value == 0x7F || scalar == "(" || scalar == ")" {
                result.append("?")
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
        return result
    }
}
