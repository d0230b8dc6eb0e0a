/// The result of `work`, or nil once `limit` has passed or the calling task is cancelled: the
/// one deadline of every DNS-bound check (reverse name, DNS lists, HELO, SPF).
///
/// `work` runs in its own task, which is cancelled when the limit passes; nobody waits for it
/// to notice, so a resolver that ignores cancellation cannot stall a session.
func withTimeLimit<T: Sendable>(_ limit: Duration, _ work: @escaping @Sendable () async -> T) async -> T? {
    let (events, sink) = AsyncStream.makeStream(of: TimeLimitEvent<T>.self)
    let worker = Task { sink.yield(.finished(await work())) }
    let timer = Task {
        try? await Task.sleep(for: limit)
        sink.yield(.deadline)
    }
    defer {
        worker.cancel()
        timer.cancel()
        sink.finish()
    }
    // The iteration ends early (nil) when the calling task is cancelled.
    for await event in events {
        if case .finished(let value) = event { return value }
        return nil
    }
    return nil
}

private enum TimeLimitEvent<T: Sendable>: Sendable {
    case finished(T)
    case deadline
}
