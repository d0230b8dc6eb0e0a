/// The verdict on one DKIM signature, in the words of `Authentication-Results:` (RFC 8601 §2.7.1).
public struct DKIMResult: Sendable, Hashable {
    /// RFC 8601 §2.7.1 result values, mapped from RFC 6376's SUCCESS / PERMFAIL / TEMPFAIL:
    public enum Outcome: String, Sendable, Hashable, CaseIterable {
        /// The signature verified.
        case pass
        /// The signature, body hash, key size or expiry failed: the message was changed, the
        /// signature is forged or too old, or the key is too weak (under 1024 bits, RFC 8301).
        case fail
        /// The signature field is malformed or asks for what Tern does not verify (a version,
        /// algorithm such as the historic rsa-sha1, canonicalisation or query method it lacks).
        case neutral
        /// The key could not be fetched for now (DNS SERVFAIL, timeout): try again later.
        case temperror
        /// The key is missing, revoked, malformed or unsuitable for the signature.
        case permerror
        /// Not evaluated: beyond the number of signatures Tern verifies in one message.
        case policy
    }

    public var result: Outcome
    /// `d=`, lower-cased; empty when the field was too malformed to name one.
    public var domain: String
    /// `s=`; empty when absent.
    public var selector: String
    /// The AUID: `i=`, or `@` + `d=` by default (RFC 6376 §3.5); empty when malformed.
    public var identity: String
    /// `a=` as written, lower-cased.
    public var algorithm: String
    /// The `b=` value without whitespace: `header.b` (RFC 6008) is its first 8 characters.
    public var signature: String
    /// The key record says `t=y`: the domain is testing DKIM.
    public var testing: Bool
    /// Why the result is not `pass`; nil when it is.
    public var reason: String?

    public init(
        result: Outcome, domain: String, selector: String, identity: String, algorithm: String,
        signature: String, testing: Bool = false, reason: String?
    ) {
        self.result = result
        self.domain = domain
        self.selector = selector
        self.identity = identity
        self.algorithm = algorithm
        self.signature = signature
        self.testing = testing
        self.reason = reason
    }
}
