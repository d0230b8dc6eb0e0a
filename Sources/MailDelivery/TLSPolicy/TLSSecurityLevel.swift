/// How much TLS a destination gets, in Postfix's words (`smtp_tls_security_level`); the values
/// of `[tls_policy]`.
public enum TLSSecurityLevel: String, Sendable, Hashable, CaseIterable {
    /// No STARTTLS, even when offered.
    case none
    /// Opportunistic STARTTLS (RFC 7435): any certificate, plaintext when TLS is not offered.
    case may
    /// TLS required, any certificate.
    case encrypt
    /// TLS required, with a certificate that chains to a trusted root and names the MX host.
    case verify
    /// TLS required, authenticated by DNSSEC-validated TLSA records (RFC 7672).
    case dane
}

/// What the message itself asks of TLS (RFC 8689).
public enum MessageTLSDemand: Sendable, Hashable {
    /// Nothing: the domain's policy decides.
    case policy
    /// `MAIL FROM … REQUIRETLS`: only over TLS with an authenticated certificate to a server
    /// that offers REQUIRETLS itself (§4.2.1).
    case requireTLS
    /// `TLS-Required: No`: policy failures (MTA-STS, DANE, `[tls_policy]`) are ignored for this
    /// message (§4.2.2); STARTTLS is still used when offered.
    case optional
}
