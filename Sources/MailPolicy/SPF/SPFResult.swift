/// The result of an SPF check (RFC 7208 §2.6), spelled as in Received-SPF and
/// Authentication-Results.
public enum SPFResult: String, Sendable, Hashable, CaseIterable {
    /// No SPF record, or no valid domain to look one up for (§2.6.1).
    case none
    /// The record says nothing about the client (§2.6.2), as `?all` or no match does.
    case neutral
    /// The client is authorized (§2.6.3).
    case pass
    /// The client is not authorized (§2.6.4).
    case fail
    /// The client is probably not authorized (§2.6.5).
    case softfail
    /// A transient DNS error; a later check may succeed (§2.6.6).
    case temperror
    /// The domain's records cannot be interpreted (§2.6.7).
    case permerror
}

/// Which identity was checked (RFC 7208 §2.3, §2.4); spelled as the `identity=` key of
/// Received-SPF (§9.1).
public enum SPFIdentity: String, Sendable, Hashable {
    /// The reverse path of MAIL FROM.
    case mailfrom
    /// The HELO/EHLO name: checked on its own, or in place of a null reverse path.
    case helo
}

/// The outcome of one SPF check and what is needed to report it.
public struct SPFVerdict: Sendable, Hashable {
    public var result: SPFResult
    /// The identity whose domain was checked.
    public var identity: SPFIdentity
    /// The domain checked: the reverse path's domain, or the HELO name.
    public var domain: String
    /// For `fail`: the domain's explanation (§6.2, from `exp=`), third-party text made safe
    /// for an SMTP reply line (printable ASCII only). Nil when the domain gives none.
    public var explanation: String?
    /// For `permerror` and `temperror` (and for `none` when there was nothing to check): why.
    public var problem: String?
    /// The directive that decided the result as written in the record (`-all`,
    /// `include:_spf.example.com`); nil for the default result or an error.
    public var mechanism: String?
    /// The client address as checked: an IPv4-mapped IPv6 address in its IPv4 form (§5).
    public var client: String
    /// The reverse path as given; empty for the null reverse path `<>`.
    public var sender: String
    public var helo: String
    /// The host that made the check, `%{r}` in explanations.
    public var receiver: String

    public init(
        result: SPFResult, identity: SPFIdentity, domain: String, explanation: String? = nil,
        problem: String? = nil, mechanism: String? = nil, client: String, sender: String, helo: String,
        receiver: String
    ) {
        self.result = result
        self.identity = identity
        self.domain = domain
        self.explanation = explanation
        self.problem = problem
        self.mechanism = mechanism
        self.client = client
        self.sender = sender
        self.helo = helo
        self.receiver = receiver
    }
}
