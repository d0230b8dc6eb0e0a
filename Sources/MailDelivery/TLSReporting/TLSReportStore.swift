import Foundation
import Logging
import Synchronization

/// The TLS-RPT counters (RFC 8460 §4): per report period, per recipient domain, per policy, the
/// sessions that succeeded and failed, and a few failure-detail rows. Bounded whatever the
/// traffic: domains per period, policies per domain and detail rows per domain are capped (a
/// session past a cap still counts in the summary, when its row exists), and only the last few
/// periods are kept. Kept in `<data_dir>/tls-rpt/results.json`, written atomically by `flush`,
/// so a restart loses at most what came since the last flush.
public final class TLSReportStore: TLSResultRecorder {
    /// One failure-detail row (RFC 8460 §4.4 `failure-details`) and its count.
    public struct Detail: Codable, Sendable, Hashable {
        public var resultType: TLSRPTResultType
        public var sendingIP: String?
        public var mxHost: String?
        public var receivingIP: String?
        public var reason: String?
        public var count: Int

        var key: [String?] { [resultType.rawValue, sendingIP, mxHost, receivingIP, reason] }
    }

    /// The counts of one policy of one domain.
    public struct PolicyResults: Codable, Sendable, Hashable {
        public var policy: TLSRPTPolicy
        public var successes = 0
        public var failures = 0
        public var details: [Detail] = []
    }

    /// Everything recorded about one domain in one period.
    public struct DomainResults: Codable, Sendable, Hashable {
        public var policies: [PolicyResults] = []
        public var detailRows: Int { policies.reduce(0) { $0 + $1.details.count } }
    }

    /// The file: period start (seconds since 1970, as text) → domain → results.
    struct State: Codable {
        var version = 1
        var periods: [String: [String: DomainResults]] = [:]
    }

    /// Limits: RFC 8460 leaves them to the sender; these keep a day's file well under a few MB.
    public struct Limits: Sendable {
        public var domainsPerPeriod = 10_000
        public var policiesPerDomain = 8
        public var detailRowsPerDomain = 50
        public var periods = 7
        public var textLength = 255

        public init() {}
    }

    /// Report period length in seconds: one UTC day, or a few seconds in tests.
    public let period: Int
    private let limits: Limits
    private let path: String?
    private let logger: Logger
    private let now: @Sendable () -> Date
    private let state: Mutex<(state: State, dirty: Bool)>

    public init(
        directory: String?, period: Int = 86400, limits: Limits = Limits(), logger: Logger,
        now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.period = max(1, period)
        self.limits = limits
        self.path = directory.map { "\($0)/results.json" }
        self.logger = logger
        self.now = now
        var loaded = State()
        if let path, let data = FileManager.default.contents(atPath: path) {
            if let state = try? JSONDecoder().decode(State.self, from: data) {
                loaded = state
            } else {
                // Never a crash's doing (the file is replaced whole), but never fatal either.
                try? FileManager.default.removeItem(atPath: path + ".bad")
                try? FileManager.default.moveItem(atPath: path, toPath: path + ".bad")
                logger.error(
                    "TLS-RPT results unreadable; set aside, starting afresh",
                    metadata: ["event": "error", "file": "\(path)"])
            }
        }
        self.state = Mutex((loaded, false))
    }

    /// The start of the period holding `date`: periods are aligned on the epoch, so a day is a
    /// UTC day.
    public func periodStart(of date: Date) -> Int {
        let seconds = Int(date.timeIntervalSince1970.rounded(.down))
        return seconds - ((seconds % period) + period) % period
    }

    public func record(_ result: TLSSessionResult) {
        let start = String(periodStart(of: now()))
        let limits = self.limits
        let clip = { (text: String?) in text.map { String($0.prefix(limits.textLength)) } }
        state.withLock { stored in
            var domains = stored.state.periods[start] ?? [:]
            guard domains[result.domain] != nil || domains.count < limits.domainsPerPeriod else { return }
            var domain = domains[result.domain] ?? DomainResults()
            var policy = result.policy
            policy.strings = policy.strings.prefix(64).map { String($0.prefix(limits.textLength * 4)) }
            var index = domain.policies.firstIndex { $0.policy == policy }
            if index == nil, domain.policies.count < limits.policiesPerDomain {
                domain.policies.append(PolicyResults(policy: policy))
                index = domain.policies.count - 1
            }
            guard let index else { return }
            if let type = result.failure {
                domain.policies[index].failures += 1
                let row = Detail(
                    resultType: type, sendingIP: result.sendingIP, mxHost: clip(result.mxHost),
                    receivingIP: result.receivingIP, reason: clip(result.reason), count: 1)
                if let existing = domain.policies[index].details.firstIndex(where: { $0.key == row.key }) {
                    domain.policies[index].details[existing].count += 1
                } else if domain.detailRows < limits.detailRowsPerDomain {
                    domain.policies[index].details.append(row)
                }
            } else {
                domain.policies[index].successes += 1
            }
            domains[result.domain] = domain
            stored.state.periods[start] = domains
            // Unsent periods beyond the limit are the oldest; they go.
            while stored.state.periods.count > limits.periods,
                let oldest = stored.state.periods.keys.min(by: { Int($0) ?? 0 < Int($1) ?? 0 })
            {
                stored.state.periods[oldest] = nil
            }
            stored.dirty = true
        }
    }

    /// The starts of the periods that have ended by `date` and hold results, oldest first.
    public func endedPeriods(at date: Date) -> [Int] {
        let current = periodStart(of: date)
        return state.withLock { stored in
            stored.state.periods.keys.compactMap(Int.init).filter { $0 < current }.sorted()
        }
    }

    /// What one period holds, by domain.
    public func results(period start: Int) -> [String: DomainResults] {
        state.withLock { $0.state.periods[String(start)] ?? [:] }
    }

    /// A period is reported (or given up): it goes.
    public func remove(period start: Int) {
        state.withLock { stored in
            if stored.state.periods.removeValue(forKey: String(start)) != nil { stored.dirty = true }
        }
    }

    /// Writes the file if anything changed since the last write: a temporary file, synced, then
    /// renamed over the old one, so a crash leaves one or the other whole.
    public func flush() {
        guard let path else { return }
        let snapshot: State? = state.withLock { stored in
            guard stored.dirty else { return nil }
            stored.dirty = false
            return stored.state
        }
        guard let snapshot else { return }
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            try AtomicFile.write(Array(try encoder.encode(snapshot)), to: path)
        } catch {
            state.withLock { $0.dirty = true }
            logger.warning(
                "TLS-RPT results not written", metadata: ["event": "error", "file": "\(path)", "error": "\(error)"])
        }
    }
}

/// A file replaced whole or not at all: written beside its place, fsynced, renamed, and the
/// folder fsynced (the pattern of Maildir delivery, SPEC §1.3).
enum AtomicFile {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func write(_ bytes: [UInt8], to path: String) throws {
        let folder = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let temporary = "\(path).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Failure(description: "open \(temporary): errno \(errno)") }
        var written = 0
        while written < bytes.count {
            let result = bytes.withUnsafeBytes { buffer in
                Foundation.write(fd, buffer.baseAddress! + written, bytes.count - written)
            }
            guard result > 0 else {
                close(fd)
                throw Failure(description: "write \(temporary): errno \(errno)")
            }
            written += result
        }
        guard fsync(fd) == 0 else {
            close(fd)
            throw Failure(description: "fsync \(temporary): errno \(errno)")
        }
        close(fd)
        guard rename(temporary, path) == 0 else { throw Failure(description: "rename \(temporary): errno \(errno)") }
        let directory = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directory >= 0 {
            _ = fsync(directory)
            close(directory)
        }
    }
}
