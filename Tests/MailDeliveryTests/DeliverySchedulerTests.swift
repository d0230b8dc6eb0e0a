import Foundation
import Logging
import MailPolicy
import MailQueue
import NIOCore
import NIOPosix
import Testing

@testable import MailDelivery

/// One local domain, `local.test`, with the mailboxes `alice` and `bob`.
private struct TestDirectory: LocalRecipientDirectory {
    func isLocalDomain(_ domain: String) -> Bool { domain == "local.test" }
    func resolve(localPart: String, domain: String) -> [String]? {
        isMailbox(localPart: localPart, domain: domain) ? ["\(localPart)@\(domain)"] : nil
    }
    func isMailbox(localPart: String, domain: String) -> Bool {
        domain == "local.test" && ["alice", "bob"].contains(localPart)
    }
    var primaryDomain: String { "local.test" }
}

/// A queue and a scheduler over it in a fresh directory, the scheduler running for `body`.
private func withScheduler(
    retry: [Duration] = [.seconds(3600)], scanInterval: Duration = .seconds(3600),
    _ body: (QueueStore, DeliveryScheduler, String) async throws -> Void
) async throws {
    let root = NSTemporaryDirectory() + "tern-scheduler-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: root) }
    let logger = Logger(label: "scheduler-test") { _ in SwiftLogNoOpLogHandler() }
    let queue = try QueueStore.open(directory: root + "/queue", logger: logger)
    defer { queue.close() }
    let pool = NIOThreadPool(numberOfThreads: 2)
    pool.start()
    let scheduler = DeliveryScheduler(
        settings: .init(
            hostname: "mx.local.test", mailRoot: root + "/mail", retry: retry, concurrency: 3,
            scanInterval: scanInterval),
        queue: queue, directory: TestDirectory(), threadPool: pool, logger: logger)
    let running = Task { await scheduler.run() }
    var failure: (any Error)?
    do {
        try await body(queue, scheduler, root + "/mail")
    } catch {
        failure = error
    }
    running.cancel()
    await running.value
    try await pool.shutdownGracefully()
    if let failure { throw failure }
}

private func enqueue(_ queue: QueueStore, to recipients: [String], body: String = "Subject: t\r\n\r\nhello\r\n")
    async throws -> QueueID
{
    let spool = try queue.makeSpool()
    try spool.write(ByteBuffer(string: body))
    let envelope = QueueEnvelope(
        sender: "sender@remote.test", recipients: recipients.map { QueuedRecipient(address: $0) })
    return try await queue.commit(spool, envelope: envelope).id
}

/// Polls until `condition` holds, for at most five seconds.
private func eventually(_ what: Comment, _ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(5)
    while !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("timed out waiting: \(what)")
            return
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}

private func newMail(_ mailRoot: String, _ mailbox: String) -> [String] {
    (try? FileManager.default.contentsOfDirectory(atPath: "\(mailRoot)/local.test/\(mailbox)/new")) ?? []
}

@Suite struct DeliverySchedulerTests {
    @Test func localRecipientsAreDeliveredAndTheMessageRemoved() async throws {
        try await withScheduler { queue, scheduler, mailRoot in
            let id = try await enqueue(queue, to: ["alice@local.test", "bob+lists@local.test"])
            scheduler.submit(id)
            try await eventually("message removed") { queue.message(id) == nil }
            #expect(newMail(mailRoot, "alice").count == 1)
            #expect(newMail(mailRoot, "bob").count == 1)
            let name = try #require(newMail(mailRoot, "bob").first)
            let content = try String(contentsOfFile: "\(mailRoot)/local.test/bob/new/\(name)", encoding: .utf8)
            #expect(content.hasPrefix("Return-Path: <sender@remote.test>\r\nDelivered-To: bob+lists@local.test\r\n"))
            #expect(content.hasSuffix("Subject: t\r\n\r\nhello\r\n"))
        }
    }

    @Test func remoteRecipientsAreDeferredAndKept() async throws {
        try await withScheduler { queue, scheduler, mailRoot in
            let before = Date()
            let id = try await enqueue(queue, to: ["alice@local.test", "someone@remote.test"])
            scheduler.submit(id)
            try await eventually("remote recipient deferred") {
                queue.message(id)?.envelope.recipients[1].status == .deferred
            }
            let message = try #require(queue.message(id))
            #expect(message.envelope.recipients[0].status == .delivered)
            let remote = message.envelope.recipients[1]
            #expect(remote.attempts == 1)
            #expect(remote.lastError?.hasPrefix("4.4.0 no route yet") == true)
            let next = try #require(remote.nextAttempt)
            #expect(next.timeIntervalSince(before) > 3500)
            #expect(newMail(mailRoot, "alice").count == 1)
        }
    }

    @Test func aMessageSubmittedTwiceIsDeliveredOnce() async throws {
        try await withScheduler { queue, scheduler, mailRoot in
            var ids: [QueueID] = []
            for _ in 0..<20 { ids.append(try await enqueue(queue, to: ["alice@local.test"])) }
            for id in ids {
                scheduler.submit(id)
                scheduler.submit(id)
            }
            scheduler.scanNow()
            try await eventually("all removed") { ids.allSatisfy { queue.message($0) == nil } }
            #expect(newMail(mailRoot, "alice").count == 20)
        }
    }

    @Test func theScanRetriesDeferredRecipientsWhenDue() async throws {
        try await withScheduler(retry: [.milliseconds(50)], scanInterval: .milliseconds(20)) { queue, scheduler, _ in
            let id = try await enqueue(queue, to: ["someone@remote.test"])
            scheduler.submit(id)
            try await eventually("three attempts") {
                (queue.message(id)?.envelope.recipients[0].attempts ?? 0) >= 3
            }
            #expect(queue.message(id)?.envelope.recipients[0].status == .deferred)
        }
    }

    @Test func heldMessagesWait() async throws {
        try await withScheduler(scanInterval: .milliseconds(20)) { queue, scheduler, mailRoot in
            let id = try await enqueue(queue, to: ["alice@local.test"])
            try await queue.hold(id)
            scheduler.submit(id)
            try await Task.sleep(for: .milliseconds(200))
            #expect(newMail(mailRoot, "alice").isEmpty)
            try await queue.release(id)
            try await eventually("delivered after release") { queue.message(id) == nil }
            #expect(newMail(mailRoot, "alice").count == 1)
        }
    }

    /// A removal is written without waiting for its sync: after a crash the message may be
    /// back with every recipient delivered. The scan removes it without delivering again.
    @Test func aFullyDeliveredMessageLeftBehindIsRemovedByTheScan() async throws {
        try await withScheduler(scanInterval: .milliseconds(20)) { queue, _, mailRoot in
            let id = try await enqueue(queue, to: ["alice@local.test"])
            try await queue.update(id, recipient: 0, status: .delivered, attempts: 1, nextAttempt: nil, lastError: nil)
            try await eventually("removed by the scan") { queue.message(id) == nil }
            #expect(newMail(mailRoot, "alice").isEmpty)
        }
    }
}
