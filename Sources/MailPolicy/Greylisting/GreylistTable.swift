/// A triplet seen before: when it was first tried, whether it has passed, and when it last did.
struct GreylistEntry: Hashable, Sendable {
    /// Seconds since the Unix epoch of the attempt that started the wait.
    var created: Int64
    /// When the triplet last passed (refreshed at most hourly); `created` while it waits.
    var lastSeen: Int64
    var passed: Bool
}

/// A client network that passed greylisting: how often (counted at most once an hour, as
/// postgrey does, so that one message to many recipients counts once) and when last counted.
struct GreylistClient: Hashable, Sendable {
    var passes: UInt32
    var lastCounted: Int64
}

/// The in-memory greylist and the changes not yet written, with the decision logic; times are
/// seconds since the Unix epoch. Not thread-safe by itself: `Greylist` keeps it under a lock.
struct GreylistTable: Sendable {
    /// Timing in whole seconds, from `Greylist.Settings`.
    struct Timing: Sendable {
        var delay: Int64
        var retryWindow: Int64
        var passedLifetime: Int64
        var autoAllowAfter: Int
        var maximumEntries: Int
    }

    /// A passed triplet's `lastSeen` and a client's count move at most this often: precise
    /// enough for lifetimes of weeks, and a busy correspondent does not rewrite its entry on
    /// every message.
    static let refreshInterval: Int64 = 3600

    var triplets: [GreylistKey: GreylistEntry] = [:]
    var clients: [GreylistKey: GreylistClient] = [:]
    /// Entries changed since the last save, at most one per key, never a key the table lacks.
    var dirtyTriplets: Set<GreylistKey> = []
    var dirtyClients: Set<GreylistKey> = []

    mutating func check(triplet key: GreylistKey, network: GreylistKey, at now: Int64, timing: Timing)
        -> GreylistDecision
    {
        if timing.autoAllowAfter > 0, let client = clients[network], !isExpired(client, at: now, timing: timing),
            client.passes >= timing.autoAllowAfter
        {
            countPass(network, at: now, timing: timing)
            return .pass(.autoAllowed)
        }
        if var entry = triplets[key] {
            if entry.passed {
                if !isExpired(entry, at: now, timing: timing) {
                    if now - entry.lastSeen >= Self.refreshInterval {
                        entry.lastSeen = now
                        update(key, entry)
                    }
                    countPass(network, at: now, timing: timing)
                    return .pass(.known)
                }
            } else if now - entry.created <= timing.retryWindow {
                let waited = max(0, now - entry.created)
                guard waited >= timing.delay else { return .deferred(retryAfter: .seconds(timing.delay - waited)) }
                entry.passed = true
                entry.lastSeen = now
                update(key, entry)
                countPass(network, at: now, timing: timing)
                return .pass(.retried(waited: .seconds(waited)))
            }
            // Passed too long ago, or the first retry came after the window: start again.
        } else if triplets.count >= timing.maximumEntries {
            makeRoom(at: now, timing: timing)
        }
        update(key, GreylistEntry(created: now, lastSeen: now, passed: false))
        return .deferred(retryAfter: .seconds(timing.delay))
    }

    func isExpired(_ entry: GreylistEntry, at now: Int64, timing: Timing) -> Bool {
        entry.passed ? now - entry.lastSeen > timing.passedLifetime : now - entry.created > timing.retryWindow
    }

    func isExpired(_ client: GreylistClient, at now: Int64, timing: Timing) -> Bool {
        now - client.lastCounted > timing.passedLifetime
    }

    private mutating func update(_ key: GreylistKey, _ entry: GreylistEntry) {
        triplets[key] = entry
        dirtyTriplets.insert(key)
    }

    private mutating func countPass(_ network: GreylistKey, at now: Int64, timing: Timing) {
        guard timing.autoAllowAfter > 0 else { return }
        var client = clients[network] ?? GreylistClient(passes: 0, lastCounted: 0)
        if clients[network] == nil {
            if clients.count >= timing.maximumEntries { makeRoomForClients(at: now, timing: timing) }
        } else if isExpired(client, at: now, timing: timing) {
            client.passes = 0
        } else if now - client.lastCounted < Self.refreshInterval {
            return
        }
        client.passes = client.passes == .max ? .max : client.passes + 1
        client.lastCounted = now
        clients[network] = client
        dirtyClients.insert(network)
    }

    // MARK: - Keeping memory bounded

    /// Drops every expired entry; returns how many went.
    @discardableResult
    mutating func removeExpired(at now: Int64, timing: Timing) -> Int {
        let before = triplets.count + clients.count
        triplets = triplets.filter { !isExpired($0.value, at: now, timing: timing) }
        clients = clients.filter { !isExpired($0.value, at: now, timing: timing) }
        dirtyTriplets = dirtyTriplets.filter { triplets[$0] != nil }
        dirtyClients = dirtyClients.filter { clients[$0] != nil }
        return before - triplets.count - clients.count
    }

    /// Brings the triplets down to nine tenths of the bound, so that the O(n) work here is
    /// paid once per tenth of the bound of new triplets: expired entries go first, then the
    /// oldest still waiting (a flood of new triplets evicts itself), then the longest unused.
    mutating func makeRoom(at now: Int64, timing: Timing) {
        let target = timing.maximumEntries - max(1, timing.maximumEntries / 10)
        triplets = triplets.filter { !isExpired($0.value, at: now, timing: timing) }
        Self.removeOldest(from: &triplets, downTo: target) { $0.passed ? nil : $0.created }
        Self.removeOldest(from: &triplets, downTo: target) { $0.passed ? $0.lastSeen : nil }
        dirtyTriplets = dirtyTriplets.filter { triplets[$0] != nil }
    }

    mutating func makeRoomForClients(at now: Int64, timing: Timing) {
        let target = timing.maximumEntries - max(1, timing.maximumEntries / 10)
        clients = clients.filter { !isExpired($0.value, at: now, timing: timing) }
        Self.removeOldest(from: &clients, downTo: target) { $0.lastCounted }
        dirtyClients = dirtyClients.filter { clients[$0] != nil }
    }

    /// Removes the entries with the smallest `age` (nil: not a candidate) until `table` has
    /// `target` entries or no candidates are left; exactly as many as needed, ties included.
    static func removeOldest<Value>(
        from table: inout [GreylistKey: Value], downTo target: Int, by age: (Value) -> Int64?
    ) {
        let excess = table.count - max(0, target)
        guard excess > 0 else { return }
        let ages = table.values.compactMap(age).sorted()
        guard !ages.isEmpty else { return }
        let cutoff = ages[min(excess, ages.count) - 1]
        // Entries older than the cutoff all go; of those at the cutoff, only as many as needed.
        var tiesToRemove = min(excess, ages.count) - ages.prefix { $0 < cutoff }.count
        table = table.filter { _, value in
            guard let time = age(value), time <= cutoff else { return true }
            if time < cutoff { return false }
            guard tiesToRemove > 0 else { return true }
            tiesToRemove -= 1
            return false
        }
    }
}
