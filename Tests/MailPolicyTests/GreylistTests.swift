import Foundation
import Synchronization
import Testing

@testable import MailPolicy

/// Wall-clock seconds the test sets by hand.
final class GreylistClock: Sendable {
    let seconds = Mutex<Int64>(1_800_000_000)

    var now: @Sendable () -> Int64 { { self.seconds.withLock { $0 } } }
    func advance(_ duration: Int64) { seconds.withLock { $0 += duration } }
}

/// A fresh directory path under the temporary folder; the greylist creates it.
final class GreylistScratch {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("tern-greylist-\(UUID())").path
    deinit { try? FileManager.default.removeItem(atPath: path) }

    func file(_ name: String) -> String { path + "/" + name }
    func exists(_ name: String) -> Bool { FileManager.default.fileExists(atPath: file(name)) }
    func bytes(_ name: String) -> [UInt8] { Array(FileManager.default.contents(atPath: file(name)) ?? Data()) }
    func write(_ name: String, _ bytes: [UInt8]) {
        _ = FileManager.default.createFile(atPath: file(name), contents: Data(bytes))
    }
}

private let hour: Int64 = 3600
private let day: Int64 = 86_400
private let client = IPAddress("192.0.2.10")!

@Suite struct GreylistTests {
    let scratch = GreylistScratch()
    let clock = GreylistClock()

    func greylist(_ settings: Greylist.Settings = .init()) throws -> Greylist {
        try Greylist(directory: scratch.path, settings: settings, now: clock.now)
    }

    @Test func firstAttemptWaitsAndARetryAfterTheDelayPasses() throws {
        let list = try greylist()
        #expect(
            list.check(client: client, sender: "a@x.test", recipient: "b@y.test")
                == .deferred(retryAfter: .seconds(300)))
        clock.advance(100)
        // Too early: still waiting, and the wait is not restarted.
        #expect(
            list.check(client: client, sender: "a@x.test", recipient: "b@y.test")
                == .deferred(retryAfter: .seconds(200)))
        // Another recipient is another triplet.
        #expect(
            list.check(client: client, sender: "a@x.test", recipient: "c@y.test")
                == .deferred(retryAfter: .seconds(300)))
        clock.advance(200)
        #expect(
            list.check(client: client, sender: "a@x.test", recipient: "b@y.test")
                == .pass(.retried(waited: .seconds(300))))
        // Later messages of the same triplet, from any host of the /24, in any case, pass.
        clock.advance(3 * day)
        #expect(
            list.check(client: IPAddress("192.0.2.200")!, sender: "A@X.test", recipient: "B@y.TEST") == .pass(.known))
        #expect(
            list.check(client: IPAddress("192.0.3.10")!, sender: "a@x.test", recipient: "b@y.test") != .pass(.known))
    }

    @Test func ipv6ClientsAreGroupedBySlash64() throws {
        let list = try greylist()
        _ = list.check(client: IPAddress("2001:db8:0:1::25")!, sender: "a@x.test", recipient: "b@y.test")
        clock.advance(300)
        #expect(
            list.check(client: IPAddress("2001:db8:0:1:ffff::26")!, sender: "a@x.test", recipient: "b@y.test")
                == .pass(.retried(waited: .seconds(300))))
        #expect(
            list.check(client: IPAddress("2001:db8:0:2::25")!, sender: "a@x.test", recipient: "b@y.test")
                == .deferred(retryAfter: .seconds(300)))
    }

    @Test func aRetryAfterTheWindowStartsOver() throws {
        let list = try greylist()
        _ = list.check(client: client, sender: "a@x.test", recipient: "b@y.test")
        clock.advance(2 * day + 1)
        #expect(
            list.check(client: client, sender: "a@x.test", recipient: "b@y.test")
                == .deferred(retryAfter: .seconds(300)))
        clock.advance(300)
        #expect(
            list.check(client: client, sender: "a@x.test", recipient: "b@y.test")
                == .pass(.retried(waited: .seconds(300))))
    }

    @Test func passedTripletsAreRememberedWhileUsed() throws {
        let list = try greylist(.init(autoAllowAfter: 0))
        _ = list.check(client: client, sender: "a@x.test", recipient: "b@y.test")
        clock.advance(300)
        #expect(
            list.check(client: client, sender: "a@x.test", recipient: "b@y.test")
                == .pass(.retried(waited: .seconds(300))))
        // Each use refreshes the 35 days.
        clock.advance(30 * day)
        #expect(list.check(client: client, sender: "a@x.test", recipient: "b@y.test") == .pass(.known))
        clock.advance(30 * day)
        #expect(list.check(client: client, sender: "a@x.test", recipient: "b@y.test") == .pass(.known))
        // Unused for longer: forgotten, and greylisted again.
        clock.advance(35 * day + hour + 1)
        #expect(
            list.check(client: client, sender: "a@x.test", recipient: "b@y.test")
                == .deferred(retryAfter: .seconds(300)))
    }

    @Test func networksThatPassedOftenEnoughAreAllowed() throws {
        let list = try greylist(.init(autoAllowAfter: 2))
        func retry(_ recipient: String) -> GreylistDecision {
            _ = list.check(client: client, sender: "a@x.test", recipient: recipient)
            clock.advance(300)
            return list.check(client: client, sender: "a@x.test", recipient: recipient)
        }
        #expect(retry("1@y.test") == .pass(.retried(waited: .seconds(300))))
        // A second pass within the hour does not count again (one message, many recipients).
        #expect(retry("2@y.test") == .pass(.retried(waited: .seconds(300))))
        #expect(
            list.check(client: client, sender: "a@x.test", recipient: "3@y.test")
                == .deferred(retryAfter: .seconds(300)))
        clock.advance(hour)
        #expect(list.check(client: client, sender: "a@x.test", recipient: "1@y.test") == .pass(.known))
        // Twice now: every triplet from the network passes at once, whoever the sender.
        #expect(
            list.check(client: IPAddress("192.0.2.77")!, sender: "z@w.test", recipient: "4@y.test")
                == .pass(.autoAllowed))
        #expect(
            list.check(client: IPAddress("198.51.100.1")!, sender: "z@w.test", recipient: "4@y.test")
                != .pass(.autoAllowed))
        // Unless the network is not seen for the lifetime.
        clock.advance(35 * day + 1)
        #expect(
            list.check(client: client, sender: "z@w.test", recipient: "5@y.test")
                == .deferred(retryAfter: .seconds(300)))
    }

    @Test func autoAllowAfterOneRetry() throws {
        let list = try greylist(.init(autoAllowAfter: 1))
        _ = list.check(client: client, sender: "a@x.test", recipient: "b@y.test")
        clock.advance(300)
        #expect(
            list.check(client: client, sender: "a@x.test", recipient: "b@y.test")
                == .pass(.retried(waited: .seconds(300))))
        #expect(list.check(client: client, sender: "q@r.test", recipient: "s@y.test") == .pass(.autoAllowed))
        #expect(list.count.triplets == 1)
    }

    @Test(arguments: [
        ("User@Example.TEST", "user@example.test"),
        ("list-bounces+bob=y.test@lists.x.test", "list-bounces@lists.x.test"),
        ("bounce-12345-678@x.test", "bounce-#-#@x.test"),
        ("prvs=1234abcdef=alice@x.test", "alice@x.test"),
        ("alice2000@x.test", "alice2000@x.test"),
        ("a.7.b_9@x.test", "a.#.b_9@x.test"),
        ("", ""),
        ("postmaster", "postmaster"),
    ])
    func senderNormalisation(sender: String, normalised: String) {
        #expect(GreylistTriplet.normalisedSender(sender) == normalised)
    }

    @Test func changingBounceAddressesKeepOneTriplet() throws {
        let list = try greylist()
        _ = list.check(client: client, sender: "bounce-1001@lists.test", recipient: "b@y.test")
        clock.advance(300)
        #expect(
            list.check(client: client, sender: "bounce-1002@lists.test", recipient: "b@y.test")
                == .pass(.retried(waited: .seconds(300))))
    }

    @Test func survivesARestart() throws {
        do {
            let first = try greylist(.init(autoAllowAfter: 1))
            _ = first.check(client: client, sender: "a@x.test", recipient: "b@y.test")
            try first.save()
        }
        clock.advance(300)
        do {
            let second = try greylist(.init(autoAllowAfter: 1))
            #expect(
                second.check(client: client, sender: "a@x.test", recipient: "b@y.test")
                    == .pass(.retried(waited: .seconds(300))))
            try second.save()
            // Not saved: lost in a crash.
            _ = second.check(client: IPAddress("203.0.113.1")!, sender: "c@x.test", recipient: "b@y.test")
        }
        clock.advance(day)
        let third = try greylist(.init(autoAllowAfter: 1))
        #expect(third.count == (1, 1))
        #expect(third.check(client: client, sender: "a@x.test", recipient: "b@y.test") == .pass(.autoAllowed))
        #expect(
            third.check(client: IPAddress("192.0.3.1")!, sender: "a@x.test", recipient: "b@y.test")
                != .pass(.autoAllowed))
        #expect(!scratch.exists("greylist.db.bad") && !scratch.exists("greylist.log.bad"))
    }

    @Test func theLogIsFoldedIntoASnapshotWhenLarge() throws {
        let list = try Greylist(
            directory: scratch.path, settings: .init(autoAllowAfter: 0), logger: .init(label: "test"), now: clock.now,
            compactionMinimum: 1_000)
        for index in 0..<1_500 { _ = list.check(client: client, sender: "s\(index)@x.test", recipient: "b@y.test") }
        try list.save()
        #expect(scratch.bytes("greylist.log").count == GreylistStore.headerSize + 1_500 * GreylistStore.recordSize)
        _ = list.check(client: client, sender: "last@x.test", recipient: "b@y.test")
        try list.save()
        #expect(scratch.bytes("greylist.log").count == GreylistStore.headerSize)
        #expect(scratch.bytes("greylist.db").count == GreylistStore.headerSize + 1_501 * GreylistStore.recordSize)
        // What comes after the compaction goes to the new log.
        _ = list.check(client: client, sender: "later@x.test", recipient: "b@y.test")
        try list.save()
        #expect(scratch.bytes("greylist.log").count == GreylistStore.headerSize + GreylistStore.recordSize)
        clock.advance(300)
        let reloaded = try greylist()
        #expect(reloaded.count.triplets == 1_502)
        #expect(
            reloaded.check(client: client, sender: "later@x.test", recipient: "b@y.test")
                == .pass(.retried(waited: .seconds(300))))
    }

    @Test func aCorruptSnapshotIsSetAsideNotFatal() throws {
        do {
            let list = try greylist()
            _ = list.check(client: client, sender: "a@x.test", recipient: "b@y.test")
            try list.save()
        }
        scratch.write("greylist.db", Array("this is not a greylist".utf8))
        // The log of the lost snapshot is still read.
        let list = try greylist()
        #expect(scratch.exists("greylist.db.bad"))
        #expect(list.count.triplets == 1)
        // A flipped bit in a record before the end: what came before it is kept, the file
        // goes aside.
        try FileManager.default.removeItem(atPath: scratch.file("greylist.db.bad"))
        let good = scratch.bytes("greylist.db")
        var bad = Array(good[GreylistStore.headerSize...])
        bad[10] ^= 0x40
        scratch.write("greylist.db", good + bad + good[GreylistStore.headerSize...])
        #expect(try greylist().count.triplets == 1)
        #expect(scratch.bytes("greylist.db.bad").count == GreylistStore.headerSize + 3 * GreylistStore.recordSize)
    }

    @Test func aTornLastRecordIsDroppedQuietly() throws {
        do {
            let list = try greylist()
            _ = list.check(client: client, sender: "a@x.test", recipient: "b@y.test")
            _ = list.check(client: client, sender: "c@x.test", recipient: "b@y.test")
            try list.save()
        }
        let log = scratch.bytes("greylist.log")
        scratch.write("greylist.log", Array(log.dropLast(7)))
        #expect(try greylist().count.triplets == 1)
        #expect(!scratch.exists("greylist.log.bad"))
    }

    @Test func aStaleLogFromAnInterruptedCompactionIsIgnored() throws {
        // Snapshot of generation 2 says "passed"; a log of generation 1 still says "waiting".
        let key = GreylistTriplet.key(client: client, sender: "a@x.test", recipient: "b@y.test")
        let now = clock.now()
        var snapshot = GreylistStore.header(generation: 2)
        GreylistStore.encode(key, GreylistEntry(created: now - 600, lastSeen: now - 300, passed: true), into: &snapshot)
        var log = GreylistStore.header(generation: 1)
        GreylistStore.encode(key, GreylistEntry(created: now - 600, lastSeen: now - 600, passed: false), into: &log)
        try FileManager.default.createDirectory(atPath: scratch.path, withIntermediateDirectories: false)
        scratch.write("greylist.db", snapshot)
        scratch.write("greylist.log", log)
        #expect(try greylist().check(client: client, sender: "a@x.test", recipient: "b@y.test") == .pass(.known))
    }

    @Test func memoryIsBoundedAndFloodsEvictThemselves() throws {
        let list = try greylist(.init(autoAllowAfter: 0, maximumEntries: 100))
        for index in 0..<5 { _ = list.check(client: client, sender: "friend\(index)@x.test", recipient: "b@y.test") }
        clock.advance(300)
        for index in 0..<5 {
            #expect(
                list.check(client: client, sender: "friend\(index)@x.test", recipient: "b@y.test")
                    != .deferred(retryAfter: .seconds(300)))
        }
        for index in 0..<1_000 {
            clock.advance(1)
            _ = list.check(client: client, sender: "spam\(index)@x.test", recipient: "b@y.test")
            #expect(list.count.triplets <= 100)
        }
        // The friends passed and stay; the newest waiting triplets stay; the oldest went.
        clock.advance(300)
        for index in 0..<5 {
            #expect(list.check(client: client, sender: "friend\(index)@x.test", recipient: "b@y.test") == .pass(.known))
        }
        #expect(
            list.check(client: client, sender: "spam999@x.test", recipient: "b@y.test")
                == .pass(.retried(waited: .seconds(300))))
        #expect(
            list.check(client: client, sender: "spam0@x.test", recipient: "b@y.test")
                == .deferred(retryAfter: .seconds(300)))
        // The bound holds across a restart too.
        try list.save()
        #expect(try greylist(.init(autoAllowAfter: 0, maximumEntries: 100)).count.triplets <= 100)
    }

    @Test func loadsOffTheEventLoopAndSavesPeriodically() async throws {
        let list = try await Greylist.load(directory: scratch.path, now: clock.now)
        let saver = Task { await list.run(saveEvery: .milliseconds(20)) }
        _ = list.check(client: client, sender: "a@x.test", recipient: "b@y.test")
        let deadline = ContinuousClock.now + .seconds(10)
        while scratch.bytes("greylist.log").count == GreylistStore.headerSize, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(scratch.bytes("greylist.log").count == GreylistStore.headerSize + GreylistStore.recordSize)
        saver.cancel()
        await saver.value
    }

    @Test func theLastSaveHappensOnShutdown() async throws {
        let list = try await Greylist.load(directory: scratch.path, now: clock.now)
        let saver = Task { await list.run(saveEvery: .seconds(3600)) }
        _ = list.check(client: client, sender: "a@x.test", recipient: "b@y.test")
        saver.cancel()
        await saver.value
        #expect(try greylist().count.triplets == 1)
    }
}
