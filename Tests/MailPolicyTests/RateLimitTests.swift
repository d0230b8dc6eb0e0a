import Synchronization
import Testing

@testable import MailPolicy

/// A clock the test moves by hand.
private final class ManualClock: Sendable {
    let start = ContinuousClock.now
    let offset = Mutex(Duration.zero)

    var now: @Sendable () -> ContinuousClock.Instant { { self.start + self.offset.withLock { $0 } } }
    func advance(_ duration: Duration) { offset.withLock { $0 += duration } }
}

private let a = IPAddress("192.0.2.1")!
private let b = IPAddress("192.0.2.2")!

@Suite struct RateLimitTests {
    @Test func connectionsWithinAndOverTheLimit() {
        let clock = ManualClock()
        let limiter = RateLimiter(limits: RateLimits(window: .seconds(60), connections: 3), now: clock.now)
        for _ in 0..<3 { #expect(limiter.admitConnection(a) == .admitted) }
        #expect(limiter.admitConnection(a) == .refused(.connections, count: 3, limit: 3))
        // Another client has its own count; refusals are not counted against anyone.
        #expect(limiter.admitConnection(b) == .admitted)
        #expect(limiter.admitConnection(a) == .refused(.connections, count: 3, limit: 3))
    }

    @Test func theWindowSlides() {
        let clock = ManualClock()
        let limiter = RateLimiter(limits: RateLimits(window: .seconds(60), messages: 4), now: clock.now)
        for _ in 0..<4 { #expect(limiter.admitMessage(a) == .admitted) }
        #expect(limiter.admitMessage(a) == .refused(.messages, count: 4, limit: 4))
        // Into the next bucket: three quarters of the last one still lie within the window.
        clock.advance(.seconds(75))
        #expect(limiter.admitMessage(a) == .admitted)
        #expect(limiter.admitMessage(a) == .refused(.messages, count: 4, limit: 4))
        // Half of it.
        clock.advance(.seconds(15))
        #expect(limiter.admitMessage(a) == .admitted)
        #expect(limiter.admitMessage(a) == .refused(.messages, count: 4, limit: 4))
        // Two windows of silence forget everything.
        clock.advance(.seconds(120))
        for _ in 0..<4 { #expect(limiter.admitMessage(a) == .admitted) }
    }

    @Test func recipientsCountOneByOneOrInBatches() {
        let clock = ManualClock()
        let limiter = RateLimiter(limits: RateLimits(recipients: 10), now: clock.now)
        #expect(limiter.admitRecipients(a, count: 8) == .admitted)
        #expect(limiter.admitRecipients(a, count: 3) == .refused(.recipients, count: 8, limit: 10))
        #expect(limiter.admitRecipients(a) == .admitted)
        #expect(limiter.admitRecipients(a) == .admitted)
        #expect(limiter.admitRecipients(a) == .refused(.recipients, count: 10, limit: 10))
        // Limits are independent: messages and connections are unlimited here.
        #expect(limiter.admitMessage(a) == .admitted)
        #expect(limiter.admitConnection(a) == .admitted)
    }

    @Test func concurrentConnections() {
        let limiter = RateLimiter(limits: RateLimits(concurrentConnections: 2))
        #expect(limiter.admitConnection(a) == .admitted)
        #expect(limiter.admitConnection(a) == .admitted)
        #expect(limiter.admitConnection(a) == .refused(.concurrentConnections, count: 2, limit: 2))
        limiter.connectionClosed(a)
        #expect(limiter.admitConnection(a) == .admitted)
        // Closing more than was opened does no harm.
        for _ in 0..<5 { limiter.connectionClosed(a) }
        #expect(limiter.admitConnection(a) == .admitted)
        #expect(limiter.admitConnection(a) == .admitted)
        #expect(limiter.admitConnection(a) == .refused(.concurrentConnections, count: 2, limit: 2))
    }

    @Test func ipv6ClientsCountPerSlash64() {
        let limiter = RateLimiter(limits: RateLimits(connections: 2))
        #expect(limiter.admitConnection(IPAddress("2001:db8:1:2::1")!) == .admitted)
        #expect(limiter.admitConnection(IPAddress("2001:db8:1:2:ffff::9")!) == .admitted)
        #expect(limiter.admitConnection(IPAddress("2001:db8:1:2::77")!) == .refused(.connections, count: 2, limit: 2))
        #expect(limiter.admitConnection(IPAddress("2001:db8:1:3::1")!) == .admitted)
        // IPv4 addresses stay separate, and a mapped address is the IPv4 client.
        #expect(limiter.admitConnection(IPAddress("192.0.2.1")!) == .admitted)
        #expect(limiter.admitConnection(IPAddress("::ffff:192.0.2.1")!) == .admitted)
        #expect(limiter.admitConnection(IPAddress("192.0.2.1")!) == .refused(.connections, count: 2, limit: 2))
    }

    @Test func memoryStaysBounded() {
        let clock = ManualClock()
        let limiter = RateLimiter(limits: RateLimits(messages: 1, maximumClients: 100), now: clock.now)
        for value in UInt32(0)..<10_000 {
            #expect(limiter.admitMessage(.v4(0x0A00_0000 + value)) == .admitted)
            #expect(limiter.trackedClients <= 101)
        }
        // The most recent clients are still counted.
        #expect(limiter.admitMessage(.v4(0x0A00_0000 + 9_999)) == .refused(.messages, count: 1, limit: 1))
        // Buckets age out as time goes on.
        clock.advance(.seconds(121))
        #expect(limiter.admitMessage(a) == .admitted)
        #expect(limiter.trackedClients == 1)
    }

    @Test func isSafeUnderConcurrentUse() async {
        let limiter = RateLimiter(limits: RateLimits(window: .seconds(3600), messages: 500))
        let admitted = await withTaskGroup(of: Int.self) { group in
            for _ in 0..<8 {
                group.addTask { (0..<100).count { _ in limiter.admitMessage(a) == .admitted } }
            }
            return await group.reduce(0, +)
        }
        #expect(admitted == 500)
    }
}
