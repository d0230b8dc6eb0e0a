import DNSClient

/// Looks a client address up in DNS block- and allowlists (RFC 5782) and adds up the weights
/// of the lists that have it: the connection-stage score of SPEC §2.6.
///
/// All lists are asked at once and the whole check has one time limit, so a dead list costs
/// at most `timeLimit` and never stalls a session; it is reported and adds nothing. Loopback
/// and private clients are looked up like any other (skipping them is the configuration's
/// business, and RFC 5782 §5 uses 127.0.0.2 as the test entry).
public struct DNSListCheck: Sendable {
    public let lists: [DNSList]
    public let resolver: any Resolver
    /// The bound on the whole check: answers that come later are reported as timed out.
    public let timeLimit: Duration
    /// The bound on fetching a listed client's TXT reason (RFC 5782 §2.1), within `timeLimit`.
    public let reasonTimeLimit: Duration

    /// At most this many distinct A record values are kept per list; a hostile list cannot
    /// make an outcome (or a log line) large.
    static let maximumAnswers = 16
    /// A reason longer than this (in characters) is cut: it ends up in log lines and replies.
    static let maximumReasonLength = 300

    public init(
        lists: [DNSList], resolver: any Resolver, timeLimit: Duration = .seconds(5),
        reasonTimeLimit: Duration = .seconds(1)
    ) {
        self.lists = lists
        self.resolver = resolver
        self.timeLimit = timeLimit
        self.reasonTimeLimit = reasonTimeLimit
    }

    /// Checks a client given as text; a client that is not an IP address (a local socket, say)
    /// has nothing to look up and gets an empty outcome.
    public func check(client: String) async -> DNSListOutcome {
        guard let address = IPAddress(client) else { return DNSListOutcome(score: 0, hits: [], failures: []) }
        return await check(client: address)
    }

    /// Asks every list about `client` concurrently and waits at most `timeLimit` (less if the
    /// calling task is cancelled). Hits and failures come in the order of `lists`.
    public func check(client: IPAddress) async -> DNSListOutcome {
        guard !lists.isEmpty else { return DNSListOutcome(score: 0, hits: [], failures: []) }
        let (events, sink) = AsyncStream.makeStream(of: Event.self)
        var workers: [Task<Void, Never>] = []
        for (index, list) in lists.enumerated() {
            let name = list.queryName(for: client)
            workers.append(
                Task { [resolver, reasonTimeLimit] in
                    let answer = await Self.lookup(name, in: list, resolver: resolver)
                    sink.yield(.answer(index, answer))
                    guard case .listed = answer else { return }
                    let reason = await withTimeLimit(reasonTimeLimit) {
                        await Self.reason(name, resolver: resolver)
                    }
                    sink.yield(.reason(index, reason ?? nil))
                })
        }
        let timer = Task { [timeLimit] in
            try? await Task.sleep(for: timeLimit)
            sink.yield(.deadline)
        }
        defer {
            for worker in workers { worker.cancel() }
            timer.cancel()
            sink.finish()
        }

        var answers = [ZoneAnswer?](repeating: nil, count: lists.count)
        var reasons = [String?](repeating: nil, count: lists.count)
        var pending = lists.count
        var ending = DNSListFailure.cancelled
        collecting: for await event in events {
            switch event {
            case .answer(let index, let answer):
                answers[index] = answer
                if case .listed = answer { continue }
                pending -= 1
            case .reason(let index, let reason):
                reasons[index] = reason
                pending -= 1
            case .deadline:
                ending = .timedOut
                break collecting
            }
            if pending == 0 { break }
        }

        var outcome = DNSListOutcome(score: 0, hits: [], failures: [])
        for (index, list) in lists.enumerated() {
            switch answers[index] {
            case .listed(let values):
                outcome.hits.append(
                    .init(zone: list.zone, weight: list.weight, answers: values, reason: reasons[index]))
                outcome.score += list.weight
            case .failed(let failure):
                outcome.failures.append(.init(zone: list.zone, reason: failure))
            case .notListed:
                break
            case nil:
                outcome.failures.append(.init(zone: list.zone, reason: ending))
            }
        }
        return outcome
    }

    private enum Event: Sendable {
        case answer(Int, ZoneAnswer)
        case reason(Int, String?)
        case deadline
    }

    private enum ZoneAnswer: Sendable {
        case listed([IPAddress])
        case notListed
        case failed(DNSListFailure)
    }

    private static func lookup(_ name: String, in list: DNSList, resolver: any Resolver) async -> ZoneAnswer {
        let records: [IPv4Address]
        do {
            records = try await resolver.a(name).value
        } catch {
            switch error {
            // RFC 5782 §2.1: a name that does not exist (or has no A record) is not listed.
            case .nameNotFound, .noData: return .notListed
            default: return .failed(.dns(error))
            }
        }
        var values: [IPAddress] = []
        for record in records where values.count < maximumAnswers {
            let value = IPAddress.v4(record.rawValue)
            if !values.contains(value) { values.append(value) }
        }
        let accepted = values.filter(list.accepts)
        if !accepted.isEmpty { return .listed(accepted) }
        let refusals = values.filter(DNSList.errorCodes.contains)
        if !refusals.isEmpty { return .failed(.refused(answers: refusals)) }
        // Listing values are in 127.0.0.0/8 by convention (RFC 5782 §2.1, §2.3); anything else
        // is a resolver that rewrites NXDOMAIN or a list gone wrong, and must not reject the world.
        let strange = values.filter { !DNSList.loopback.contains($0) }
        if !strange.isEmpty { return .failed(.unexpectedAnswer(strange)) }
        return .notListed
    }

    /// The TXT records at the listing's name (RFC 5782 §2.1), joined with "; " and reduced to
    /// printable ASCII: the text goes into log lines and SMTP replies, where a CR or LF would
    /// let the list's operator (or whoever spoofs the answer) inject lines.
    private static func reason(_ name: String, resolver: any Resolver) async -> String? {
        guard let texts = try? await resolver.txt(name).value, !texts.isEmpty else { return nil }
        let joined = texts.joined(separator: "; ")
        var reason = ""
        for scalar in joined.unicodeScalars {
            guard reason.unicodeScalars.count < maximumReasonLength else { break }
            reason.unicodeScalars.append((0x20...0x7E).contains(scalar.value) ? scalar : "?")
        }
        return reason
    }
}

/// What the DNS lists said about one client.
public struct DNSListOutcome: Sendable, Hashable {
    /// A list that has the client.
    public struct Hit: Sendable, Hashable {
        public var zone: String
        public var weight: Int
        /// The accepted A record values, such as 127.0.0.2 (their meaning is the list's).
        public var answers: [IPAddress]
        /// The list's TXT record, when it came in time; printable ASCII only.
        public var reason: String?

        public init(zone: String, weight: Int, answers: [IPAddress], reason: String?) {
            self.zone = zone
            self.weight = weight
            self.answers = answers
            self.reason = reason
        }
    }

    /// A list that gave no usable answer; it adds nothing to the score. Worth logging: a list
    /// that refuses every query protects nobody.
    public struct Failure: Sendable, Hashable {
        public var zone: String
        public var reason: DNSListFailure

        public init(zone: String, reason: DNSListFailure) {
            self.zone = zone
            self.reason = reason
        }
    }

    /// The sum of the weights of the lists in `hits`.
    public var score: Int
    public var hits: [Hit]
    public var failures: [Failure]

    public init(score: Int, hits: [Hit], failures: [Failure]) {
        self.score = score
        self.hits = hits
        self.failures = failures
    }
}

/// Why a DNS list gave no usable answer.
public enum DNSListFailure: Sendable, Hashable, CustomStringConvertible {
    /// No answer within the check's time limit.
    case timedOut
    /// The caller stopped waiting (its task was cancelled, e.g. the client went away).
    case cancelled
    /// A temporary failure or a malformed reply.
    case dns(DNSError)
    /// An error code from 127.255.255.0/24: the list refused the query, e.g. because it came
    /// through a public resolver (Spamhaus 127.255.255.254) or over a query limit.
    case refused(answers: [IPAddress])
    /// A value outside 127.0.0.0/8: a resolver rewriting NXDOMAIN, or a list listing the world.
    case unexpectedAnswer([IPAddress])

    public var description: String {
        switch self {
        case .timedOut: "no answer in time"
        case .cancelled: "lookup cancelled"
        case .dns(let error): "\(error)"
        case .refused(let answers):
            "query refused by the list (\(answers.map(\.description).joined(separator: ", ")))"
        case .unexpectedAnswer(let answers):
            "answer outside 127.0.0.0/8 (\(answers.map(\.description).joined(separator: ", ")))"
        }
    }
}
