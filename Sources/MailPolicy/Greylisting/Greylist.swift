import Glibc
import Logging
import NIOConcurrencyHelpers
import NIOPosix

/// Greylisting (SPEC §2.6): the first delivery attempt of a (client network, sender,
/// recipient) triplet is deferred; a real MTA retries (RFC 5321 §4.5.4.1), most spamware does
/// not. A retry after `delay` and within `retryWindow` passes, and the triplet then passes
/// directly for `passedLifetime` after its last use. A client network that has passed
/// `autoAllowAfter` times (counted at most once an hour, as postgrey does) passes every
/// triplet directly: senders that retried before are not made to wait again.
///
/// `check` works in memory and never blocks on I/O; `save()` writes the changes (see
/// `GreylistStore`), and `run(saveEvery:)` does so periodically, so a crash loses at most the
/// last few seconds. Memory is bounded by `maximumEntries` triplets and as many networks.
public final class Greylist: Sendable {
    public struct Settings: Sendable, Hashable {
        /// How long a new triplet waits before a retry passes (postgrey: 5 minutes).
        public var delay: Duration
        /// How long the first retry may take before the wait starts over (postgrey: 2 days).
        /// RFC 5321 §4.5.4.1 asks senders to retry for 4–5 days, so a later retry still arrives
        /// and waits once more.
        public var retryWindow: Duration
        /// How long a passed triplet, or an auto-allowed network, is remembered after its last
        /// use (postgrey's `--max-age`: 35 days).
        public var passedLifetime: Duration
        /// Passes after which a client network passes every triplet; 0 turns auto-allow off.
        /// Postgrey's default of 5: one retry shows a queue, which a spam run through a real
        /// MTA has too; five deliveries, each at least an hour apart, show a steady correspondent.
        public var autoAllowAfter: Int
        /// Triplets kept at most (as many networks again): 48 bytes each on disk, about twice
        /// that in memory.
        public var maximumEntries: Int

        public init(
            delay: Duration = .seconds(300), retryWindow: Duration = .seconds(2 * 86_400),
            passedLifetime: Duration = .seconds(35 * 86_400), autoAllowAfter: Int = 5, maximumEntries: Int = 1_000_000
        ) {
            self.delay = delay
            self.retryWindow = retryWindow
            self.passedLifetime = passedLifetime
            self.autoAllowAfter = autoAllowAfter
            self.maximumEntries = maximumEntries
        }
    }

    public let settings: Settings
    /// The directory of the store, e.g. `<data_dir>/greylist`.
    public let directory: String
    private let timing: GreylistTable.Timing
    private let logger: Logger
    private let now: @Sendable () -> Int64
    private let table: NIOLockedValueBox<GreylistTable>
    /// Held for the whole of a save, so saves never interleave; `check` never takes it.
    private let store: NIOLockedValueBox<GreylistStore>
    private let lastSweep: NIOLockedValueBox<Int64>

    /// The log is folded into a new snapshot once it holds this many records and half as many
    /// as the table: replaying it stays cheap, and each change is rewritten a bounded number of
    /// times.
    static let defaultCompactionMinimum = 65_536
    private let compactionMinimum: Int

    /// Expired entries are swept out at most this often (they are also skipped when read).
    static let sweepInterval: Int64 = 3600

    /// The wall clock in seconds since the Unix epoch: entries outlive restarts, so a
    /// monotonic clock would not do.
    public static let systemClock: @Sendable () -> Int64 = { Int64(time(nil)) }

    /// Opens (or creates) the store in `directory` and reads it, which blocks for as long as
    /// reading a large file takes: call it from a thread pool (`load` does), not an event loop.
    /// Unreadable files are set aside and logged, never fatal; this throws only when the
    /// directory cannot be created or read.
    public convenience init(
        directory: String, settings: Settings = Settings(), logger: Logger = Logger(label: "tern.greylist"),
        now: @escaping @Sendable () -> Int64 = Greylist.systemClock
    ) throws(GreylistError) {
        try self.init(
            directory: directory, settings: settings, logger: logger, now: now,
            compactionMinimum: Self.defaultCompactionMinimum)
    }

    init(
        directory: String, settings: Settings, logger: Logger, now: @escaping @Sendable () -> Int64,
        compactionMinimum: Int
    ) throws(GreylistError) {
        self.compactionMinimum = compactionMinimum
        self.settings = settings
        self.directory = directory
        self.logger = logger
        self.now = now
        self.timing = GreylistTable.Timing(
            delay: Self.seconds(settings.delay), retryWindow: Self.seconds(settings.retryWindow),
            passedLifetime: Self.seconds(settings.passedLifetime), autoAllowAfter: max(0, settings.autoAllowAfter),
            maximumEntries: max(1, settings.maximumEntries))

        var table = GreylistTable()
        var store = GreylistStore(directory: directory)
        try store.load(into: &table, logger: logger)
        let time = now()
        table.removeExpired(at: time, timing: timing)
        if table.triplets.count > timing.maximumEntries { table.makeRoom(at: time, timing: timing) }
        if table.clients.count > timing.maximumEntries { table.makeRoomForClients(at: time, timing: timing) }
        // A fresh snapshot of what was read: the log starts empty, and nothing set aside or
        // expired is read again.
        do {
            try store.compact(table)
        } catch {
            logger.error(
                "greylist not written; will retry", metadata: ["event": "greylist", "error": "\(error)"])
        }
        table.dirtyTriplets = []
        table.dirtyClients = []
        logger.info(
            "greylist loaded",
            metadata: [
                "event": "greylist", "directory": "\(directory)", "triplets": "\(table.triplets.count)",
                "networks": "\(table.clients.count)",
            ])
        self.table = NIOLockedValueBox(table)
        self.store = NIOLockedValueBox(store)
        self.lastSweep = NIOLockedValueBox(time)
    }

    /// `init` on a thread pool, so that reading a large store blocks no event loop.
    public static func load(
        directory: String, settings: Settings = Settings(), logger: Logger = Logger(label: "tern.greylist"),
        threadPool: NIOThreadPool = .singleton, now: @escaping @Sendable () -> Int64 = Greylist.systemClock
    ) async throws -> Greylist {
        try await threadPool.runIfActive {
            try Greylist(directory: directory, settings: settings, logger: logger, now: now)
        }
    }

    deinit {
        store.withLockedValue { $0.closeLog() }
    }

    /// Decides about one recipient of a transaction from `client`, in memory, at once.
    /// `sender` is the reverse-path without brackets ("" for the null sender), `recipient` the
    /// forward-path as given.
    public func check(client: IPAddress, sender: String, recipient: String) -> GreylistDecision {
        let key = GreylistTriplet.key(client: client, sender: sender, recipient: recipient)
        let network = GreylistTriplet.network(of: client)
        let time = now()
        return table.withLockedValue { $0.check(triplet: key, network: network, at: time, timing: timing) }
    }

    /// Triplets and client networks held (for tests and statistics).
    public var count: (triplets: Int, networks: Int) {
        table.withLockedValue { ($0.triplets.count, $0.clients.count) }
    }

    /// Writes the changes since the last save and fsyncs them; when the log has grown large,
    /// writes a fresh snapshot instead. Blocks on disk I/O: call it from a thread
    /// pool. After a failure the changes stay pending for the next save.
    public func save() throws(GreylistError) {
        let time = now()
        let sweep = lastSweep.withLockedValue { last in
            guard time - last >= Self.sweepInterval || time < last else { return false }
            last = time
            return true
        }
        if sweep { table.withLockedValue { _ = $0.removeExpired(at: time, timing: timing) } }

        let result = store.withLockedValue { store -> Result<Void, GreylistError> in
            let size = table.withLockedValue { $0.triplets.count + $0.clients.count }
            do throws(GreylistError) {
                if store.log == nil || store.logRecords >= max(compactionMinimum, size / 2) {
                    try compact(&store)
                } else {
                    try append(&store)
                }
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        try result.get()
    }

    /// Saves every `interval` until the calling task is cancelled, then once more; failures
    /// are logged and retried at the next round. Run it beside the server for its lifetime.
    public func run(saveEvery interval: Duration = .seconds(5), threadPool: NIOThreadPool = .singleton) async {
        repeat {
            try? await Task.sleep(for: interval)
            // Its own task, which the caller's cancellation does not reach: the last save
            // after shutdown must still happen.
            let saving = Task {
                do {
                    try await threadPool.runIfActive { try self.save() }
                } catch {
                    logger.error(
                        "greylist not saved; will retry", metadata: ["event": "greylist", "error": "\(error)"])
                }
            }
            await saving.value
        } while !Task.isCancelled
    }

    private func append(_ store: inout GreylistStore) throws(GreylistError) {
        let (triplets, clients) = table.withLockedValue { table in
            defer {
                table.dirtyTriplets = []
                table.dirtyClients = []
            }
            return (
                table.dirtyTriplets.compactMap { key in table.triplets[key].map { (key, $0) } },
                table.dirtyClients.compactMap { key in table.clients[key].map { (key, $0) } }
            )
        }
        do {
            try store.append(triplets: triplets, clients: clients)
        } catch {
            markDirty(triplets.map(\.0), clients.map(\.0))
            throw error
        }
    }

    private func compact(_ store: inout GreylistStore) throws(GreylistError) {
        // Copy-on-write: the copy costs nothing until `check` next changes the table.
        let (snapshot, triplets, clients) = table.withLockedValue { table in
            defer {
                table.dirtyTriplets = []
                table.dirtyClients = []
            }
            return (table, Array(table.dirtyTriplets), Array(table.dirtyClients))
        }
        do {
            try store.compact(snapshot)
        } catch {
            markDirty(triplets, clients)
            throw error
        }
    }

    /// Changes that did not reach the disk wait for the next save (with whatever state their
    /// entries have by then).
    private func markDirty(_ triplets: [GreylistKey], _ clients: [GreylistKey]) {
        table.withLockedValue { table in
            for key in triplets where table.triplets[key] != nil { table.dirtyTriplets.insert(key) }
            for key in clients where table.clients[key] != nil { table.dirtyClients.insert(key) }
        }
    }

    private static func seconds(_ duration: Duration) -> Int64 {
        max(0, duration.components.seconds)
    }
}

/// What greylisting says about one recipient.
public enum GreylistDecision: Sendable, Hashable {
    case pass(GreylistPass)
    /// First attempt, or a retry before the delay is over: reply `450 4.7.1` and let the
    /// client come back after `retryAfter`.
    case deferred(retryAfter: Duration)
}

/// Why a triplet passed.
public enum GreylistPass: Sendable, Hashable {
    /// The client's network has passed often enough before.
    case autoAllowed
    /// The first retry after the delay; `waited` since the first attempt (worth a header).
    case retried(waited: Duration)
    /// A triplet that passed before and is still remembered.
    case known
}
