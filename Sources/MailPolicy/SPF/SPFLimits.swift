/// The bounds of one SPF check, each with the RFC 7208 text that sets it.
enum SPFLimits {
    /// §4.6.4: at most 10 terms that query the DNS (include, a, mx, ptr, exists, redirect)
    /// per check, includes and redirects included; one more is a permerror.
    static let dnsTerms = 10
    /// §4.6.4: at most 2 of those terms may find nothing (NXDOMAIN or no records); a third
    /// is a permerror.
    static let voidLookups = 2
    /// §4.6.4: an "mx" with more than 10 MX records is a permerror.
    static let mxNames = 10
    /// §4.6.4: a "ptr" or `%{p}` checks at most 10 PTR names; the rest are ignored.
    static let ptrNames = 10
    /// §4.6.4: "at least 20 seconds" for a whole check before answering temperror.
    static let defaultTimeLimit: Duration = .seconds(20)
    /// §7.3: a name built by macro expansion is cut from the left to 253 characters.
    static let domainNameLength = 253
    /// §6.2 lets the explanation be shortened; it ends up in a reply line of at most 512 octets
    /// (RFC 5321 §4.5.3.1.5) together with the reply code.
    static let explanationLength = 400
    /// The `problem=` text of a Received-SPF field is our own words and a domain name or two.
    static let problemLength = 200
}
