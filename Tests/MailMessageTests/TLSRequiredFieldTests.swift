import Testing

@testable import MailMessage

@Suite struct TLSRequiredFieldTests {
    /// (message start, says `TLS-Required: No`), RFC 8689 §5.
    static let fixtures: [(String, Bool)] = [
        ("Subject: x\r\nTLS-Required: No\r\n\r\nbody\r\n", true),
        ("tls-required:no\r\n\r\n", true),
        ("TLS-Required:  NO \r\nSubject: y\r\n\r\n", true),
        ("TLS-Required:\r\n No\r\n\r\n", true),
        ("Subject: x\nTLS-Required: No\n\nbody\n", true),
        ("TLS-Required: Yes\r\n\r\n", false),
        ("TLS-Required: No thanks\r\n\r\n", false),
        ("X-TLS-Required: No\r\n\r\n", false),
        ("Subject: TLS-Required: No\r\n\r\n", false),
        ("Subject: x\r\n\r\nTLS-Required: No\r\n", false),
        ("", false),
    ]

    @Test(arguments: fixtures)
    func saysNo(_ text: String, _ expected: Bool) {
        #expect(TLSRequiredField.saysNo(Array(text.utf8)) == expected, "\(text.debugDescription)")
    }
}
