import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A shared cache of lookup outcomes for `StubResolver`, by name and type, kept for the TTL the
/// DNS gave them.
///
/// - Answers are kept for the smallest TTL of the records used, CNAMEs included
///   (`DNSAnswer.ttl`). A cached answer comes back with that TTL counted down.
/// - NXDOMAIN and NODATA are kept as RFC 2308 §5 says: for the smaller of the SOA record's TTL
///   and its MINIMUM field, taken from the reply's authority section. A negative reply without
///   an SOA is not kept (RFC 2308 §5: it SHOULD NOT be).
/// - Temporary failures are never kept. The next lookup asks again, and the caller's retry
///   schedule is the back-off.
///
/// Identical lookups at the same time are asked once: the first leads, the others wait for its
/// outcome, whatever it is (a temporary failure too: they asked at the same moment).
///
/// Every TTL is capped (`maximumTTL`, `maximumNegativeTTL`). The cache holds at most `capacity`
/// entries: expired ones go first, then arbitrary ones, so its memory stays bounded whatever the
/// traffic.
public final class DNSCache: Sendable {
    /// One cached outcome: an answer, or a permanent "no" (`.nameNotFound`, `.noData`).
    public typealias Outcome = Result<DNSAnswer<[DNSRecordData]>, DNSError>

    struct Key: Hashable {
        var name: DNSName
        var type: DNSRecordType
    }

    struct Entry {
        var outcome: Outcome
        /// Monotonic nanoseconds.
        var stored: UInt64
        var expires: UInt64
    }

    public let capacity: Int
    public let maximumTTL: UInt32
    public let maximumNegativeTTL: UInt32
    /// Monotonic nanoseconds; tests move it by hand.
    let clock: @Sendable () -> UInt64
    private let entries = Mutex<[Key: Entry]>([:])
    /// Lookups under way, with the callers waiting for them; nil tells a waiter to look again.
    private let inFlight = Mutex<[Key: [CheckedContinuation<Outcome?, Never>]]>([:])

    /// Who does a lookup that is not cached.
    public enum Participation: Sendable {
        /// Ask the servers, then call `finishLookup` with the outcome, whatever happens.
        case lead
        /// Another caller asked at the same time: its outcome. nil: it ended just before this
        /// caller joined; look in the cache again.
        case follow(Outcome?)
    }

    public convenience init(
        capacity: Int = 10_000, maximumTTL: UInt32 = 86_400, maximumNegativeTTL: UInt32 = 3_600
    ) {
        self.init(
            capacity: capacity, maximumTTL: maximumTTL, maximumNegativeTTL: maximumNegativeTTL,
            clock: monotonicNanoseconds)
    }

    init(
        capacity: Int, maximumTTL: UInt32, maximumNegativeTTL: UInt32, clock: @escaping @Sendable () -> UInt64
    ) {
        self.capacity = max(1, capacity)
        self.maximumTTL = maximumTTL
        self.maximumNegativeTTL = maximumNegativeTTL
        self.clock = clock
    }

    public var count: Int { entries.withLock { $0.count } }

    /// The cached outcome for `name`/`type` with its TTL counted down, or nil.
    public func lookup(_ name: DNSName, type: DNSRecordType) -> Outcome? {
        let now = clock()
        let key = Key(name: name, type: type)
        return entries.withLock { entries -> Outcome? in
            guard let entry = entries[key] else { return nil }
            guard now < entry.expires else {
                entries[key] = nil
                return nil
            }
            guard case .success(var answer) = entry.outcome else { return entry.outcome }
            let elapsed = UInt32(clamping: (now - entry.stored) / 1_000_000_000)
            answer.ttl = answer.ttl > elapsed ? answer.ttl - elapsed : 0
            return .success(answer)
        }
    }

    /// Keeps an answer for its TTL (capped). A TTL of 0 means "do not cache" (RFC 1035 §3.2.1).
    public func store(_ answer: DNSAnswer<[DNSRecordData]>, for name: DNSName, type: DNSRecordType) {
        insert(.success(answer), ttl: min(answer.ttl, maximumTTL), for: Key(name: name, type: type))
    }

    /// Keeps a permanent "no" for `ttl` seconds (capped); temporary failures are ignored.
    public func storeNegative(_ error: DNSError, ttl: UInt32, for name: DNSName, type: DNSRecordType) {
        guard error == .nameNotFound || error == .noData else { return }
        insert(.failure(error), ttl: min(ttl, maximumNegativeTTL), for: Key(name: name, type: type))
    }

    /// Leads the lookup of `name`/`type`, or waits for the one already under way.
    public func joinLookup(_ name: DNSName, type: DNSRecordType) async -> Participation {
        let key = Key(name: name, type: type)
        let leads = inFlight.withLock { table in
            guard table[key] == nil else { return false }
            table[key] = []
            return true
        }
        if leads { return .lead }
        let outcome = await withCheckedContinuation { (continuation: CheckedContinuation<Outcome?, Never>) in
            let joined = inFlight.withLock { table in
                guard table[key] != nil else { return false }
                table[key]!.append(continuation)
                return true
            }
            if !joined { continuation.resume(returning: nil) }
        }
        return .follow(outcome)
    }

    /// Ends a lookup this caller leads: every caller waiting for it gets `outcome`.
    public func finishLookup(_ name: DNSName, type: DNSRecordType, _ outcome: Outcome) {
        let waiting = inFlight.withLock { $0.removeValue(forKey: Key(name: name, type: type)) } ?? []
        for waiter in waiting { waiter.resume(returning: outcome) }
    }

    /// Forgets everything (e.g. after the configuration's DNS servers changed).
    public func removeAll() {
        entries.withLock { $0.removeAll() }
    }

    private func insert(_ outcome: Outcome, ttl: UInt32, for key: Key) {
        guard ttl > 0 else { return }
        let now = clock()
        let entry = Entry(outcome: outcome, stored: now, expires: now + UInt64(ttl) * 1_000_000_000)
        entries.withLock { entries in
            if entries[key] == nil && entries.count >= capacity {
                entries = entries.filter { now < $0.value.expires }
                // Still full of live entries: drop a tenth, whichever the table yields first.
                if entries.count >= capacity {
                    for victim in entries.keys.prefix(max(1, capacity / 10)) { entries[victim] = nil }
                }
            }
            entries[key] = entry
        }
    }

    /// RFC 2308 §5: how long a negative reply may be kept, from the SOA in its authority
    /// section; nil when there is none.
    public static func negativeTTL(of reply: DNSMessage) -> UInt32? {
        for record in reply.authority where record.type == .soa {
            if case .soa(let soa) = record.data { return min(record.ttl, soa.minimum) }
        }
        return nil
    }
}

/// Nanoseconds on the monotonic clock.
private func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}
