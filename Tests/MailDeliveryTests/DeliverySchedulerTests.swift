import Foundation
import Logging
import MailPolicy
import MailQueue
import NIOCore
import NIOPosix
import Synchronization
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

/// Remote delivery as a script: each address gets its scripted outcome, or a deferral; every
/// transfer is recorded with its content.
private final class ScriptedTransport: RemoteTransport {
    struct Transfer: Sendable {
        var sender: String
        var recipients: [String]
        var content: String
    }

    let outcomes: [String: DeliveryOutcome]
    private let recorded = Mutex<[Transfer]>([])

    init(_ outcomes: [String: DeliveryOutcome] = [:]) { self.outcomes = outcomes }

    var transfers: [Transfer] { recorded.withLock { $0 } }

    func deliver(_ message: OutboundMessage, domain: String) async -> [DeliveryOutcome] {
        var content = ""
        if let next = try? await message.content() {
            while let chunk = try? await next() { content += String(buffer: chunk) }
        }
        recorded.withLock {
            $0.append(
                Transfer(
                    sender: message.envelope.sender, recipients: message.envelope.recipients.map(\.address),
                    content: content))
        }
        return message.envelope.recipients.map {
            outcomes[$0.address]
                ?? DeliveryOutcome(
                    kind: .deferred, status: "4.4.1", text: "connect to mx.\(domain)[192.0.2.1]:25: connection refused")
        }
    }

    func closeIdleConnections(all: Bool) async {}
}

private let refused = DeliveryOutcome(
    kind: .bounced, status: "5.1.1", text: "550 5.1.1 <nobody@remote.test>: no such user", remoteMTA: "mx.remote.test",
    fromServer: true, relay: "mx.remote.test[192.0.2.1]:25")
private let accepted = DeliveryOutcome(
    kind: .delivered, status: "2.0.0", text: "250 2.0.0 queued", remoteMTA: "mx.remote.test", fromServer: true,
    relay: "mx.remote.test[192.0.2.1]:25")

/// A queue and a scheduler over it in a fresh directory, the scheduler running for `body`.
private func withScheduler(
    retry: [Duration] = [.seconds(3600)], scanInterval: Duration = .seconds(3600),
    maxQueueTime: Duration = .seconds(86400), delayWarning: Duration? = nil, postmaster: String = "alice@local.test",
    transport: ScriptedTransport = ScriptedTransport(),
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
            hostname: "mx.local.test", mailRoot: root + "/mail", retry: retry, maxQueueTime: maxQueueTime,
            delayWarning: delayWarning, postmaster: postmaster, concurrency: 3, scanInterval: scanInterval),
        queue: queue, directory: TestDirectory(), transport: transport, threadPool: pool, logger: logger)
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

private func enqueue(
    _ queue: QueueStore, to recipients: [String], from sender: String = "sender@remote.test",
    notify: UInt8? = nil, body: String = "Subject: t\r\n\r\nhello\r\n"
) async throws -> QueueID {
    let spool = try queue.makeSpool()
    try spool.write(ByteBuffer(string: body))
    let envelope = QueueEnvelope(
        sender: sender, recipients: recipients.map { QueuedRecipient(address: $0, notify: notify) },
        envelopeID: "env-1")
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
            #expect(remote.lastError == "4.4.1 connect to mx.remote.test[192.0.2.1]:25: connection refused")
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

    @Test func aRefusedRecipientBouncesAndTheOtherIsDelivered() async throws {
        let transport = ScriptedTransport(["nobody@remote.test": refused, "someone@remote.test": accepted])
        try await withScheduler(transport: transport) { queue, scheduler, _ in
            let id = try await enqueue(queue, to: ["someone@remote.test", "nobody@remote.test"])
            scheduler.submit(id)
            try await eventually("original removed and bounce sent") {
                queue.message(id) == nil && transport.transfers.count == 2
            }
            let original = transport.transfers[0]
            #expect(original.recipients == ["someone@remote.test", "nobody@remote.test"])
            let bounce = transport.transfers[1]
            #expect(bounce.sender == "")
            #expect(bounce.recipients == ["sender@remote.test"])
            #expect(bounce.content.contains("Final-Recipient: rfc822; nobody@remote.test"))
            #expect(!bounce.content.contains("Final-Recipient: rfc822; someone@remote.test"))
            #expect(bounce.content.contains("Action: failed"))
            #expect(bounce.content.contains("Status: 5.1.1"))
            #expect(bounce.content.contains("Diagnostic-Code: smtp; 550 5.1.1 <nobody@remote.test>: no such user"))
            #expect(bounce.content.contains("Original-Envelope-Id: env-1"))
            #expect(bounce.content.contains("Subject: t"))
        }
    }

    @Test func noticeIsSentOnlyWhenNotifyAsksForIt() async throws {
        let transport = ScriptedTransport(["nobody@remote.test": refused])
        try await withScheduler(transport: transport) { queue, scheduler, _ in
            // NOTIFY=NEVER (RFC 3461 §4.1): no bounce.
            let id = try await enqueue(queue, to: ["nobody@remote.test"], notify: 0)
            scheduler.submit(id)
            try await eventually("removed") { queue.message(id) == nil }
            try await Task.sleep(for: .milliseconds(100))
            #expect(transport.transfers.count == 1)
        }
    }

    /// NOTIFY=SUCCESS (RFC 3461 §4.1, §5.2.2): "delivered" for a local mailbox, "relayed" for a
    /// server without DSN, nothing for one that took the request over.
    @Test func successIsReportedWhereTheNextHopWillNot() async throws {
        var passedOn = accepted
        passedOn.dsnPassedOn = true
        let transport = ScriptedTransport(["plain@remote.test": accepted, "dsn@remote.test": passedOn])
        try await withScheduler(transport: transport) { queue, scheduler, mailRoot in
            let id = try await enqueue(
                queue, to: ["alice@local.test", "plain@remote.test", "dsn@remote.test"], notify: 3,
                body: "Subject: t\r\n\r\nsecret body\r\n")
            scheduler.submit(id)
            try await eventually("delivered and reported") {
                queue.message(id) == nil && transport.transfers.count == 2
            }
            #expect(newMail(mailRoot, "alice").count == 1)
            let notice = transport.transfers[1]
            #expect(notice.sender == "" && notice.recipients == ["sender@remote.test"])
            #expect(notice.content.contains("Subject: Successful Mail Delivery Report"))
            #expect(notice.content.contains("Final-Recipient: rfc822; alice@local.test\r\nAction: delivered\r\n"))
            #expect(notice.content.contains("Final-Recipient: rfc822; plain@remote.test\r\nAction: relayed\r\n"))
            #expect(notice.content.contains("Diagnostic-Code: smtp; 250 2.0.0 queued"))
            #expect(!notice.content.contains("dsn@remote.test"))
            #expect(notice.content.contains("text/rfc822-headers") && !notice.content.contains("secret body"))
        }
    }

    @Test func aFailedNoticeGoesToPostmaster() async throws {
        let transport = ScriptedTransport(["nobody@remote.test": refused])
        try await withScheduler(transport: transport) { queue, scheduler, mailRoot in
            // A bounce (null sender) that bounces is never answered with a bounce: postmaster
            // (alice here) hears of it instead.
            let id = try await enqueue(queue, to: ["nobody@remote.test"], from: "")
            scheduler.submit(id)
            try await eventually("postmaster notified") { newMail(mailRoot, "alice").count == 1 }
            try await eventually("queue empty") { queue.messages().isEmpty }
            #expect(transport.transfers.count == 1)
        }
    }

    @Test func aFailedNoticeToPostmasterIsDropped() async throws {
        let transport = ScriptedTransport(["nobody@remote.test": refused, "pm@remote.test": refused])
        try await withScheduler(postmaster: "pm@remote.test", transport: transport) { queue, scheduler, _ in
            let id = try await enqueue(queue, to: ["nobody@remote.test"], from: "")
            scheduler.submit(id)
            try await eventually("notice to postmaster tried") { transport.transfers.count == 2 }
            try await eventually("queue empty") { queue.messages().isEmpty }
            try await Task.sleep(for: .milliseconds(100))
            #expect(transport.transfers.count == 2)
            #expect(transport.transfers[1].recipients == ["pm@remote.test"])
            #expect(transport.transfers[1].sender == "")
        }
    }

    @Test func recipientsStillDeferredAfterTheQueueLifetimeBounce() async throws {
        let transport = ScriptedTransport()
        try await withScheduler(
            retry: [.milliseconds(50)], scanInterval: .milliseconds(20), maxQueueTime: .milliseconds(300),
            transport: transport
        ) { queue, scheduler, mailRoot in
            let id = try await enqueue(queue, to: ["someone@remote.test"], from: "bob@local.test")
            scheduler.submit(id)
            try await eventually("expired and bounced") { queue.message(id) == nil }
            try await eventually("bounce delivered to bob") { newMail(mailRoot, "bob").count == 1 }
            let name = try #require(newMail(mailRoot, "bob").first)
            let bounce = try String(contentsOfFile: "\(mailRoot)/local.test/bob/new/\(name)", encoding: .utf8)
            #expect(bounce.contains("Status: 4.4.7"))
            #expect(bounce.contains("Action: failed"))
            #expect(bounce.contains("connection refused"))
            #expect(bounce.contains("Return-Path: <>"))
        }
    }

    @Test func oneDelayWarningIsSentAfterDelayWarning() async throws {
        let transport = ScriptedTransport()
        try await withScheduler(
            retry: [.milliseconds(40)], scanInterval: .milliseconds(20), delayWarning: .milliseconds(100),
            transport: transport
        ) { queue, scheduler, mailRoot in
            let id = try await enqueue(queue, to: ["someone@remote.test"], from: "bob@local.test")
            scheduler.submit(id)
            try await eventually("warned") { newMail(mailRoot, "bob").count == 1 }
            try await eventually("more attempts") { (queue.message(id)?.envelope.recipients[0].attempts ?? 0) >= 6 }
            #expect(newMail(mailRoot, "bob").count == 1)
            #expect(queue.message(id)?.delayWarned == true)
            let name = try #require(newMail(mailRoot, "bob").first)
            let warning = try String(contentsOfFile: "\(mailRoot)/local.test/bob/new/\(name)", encoding: .utf8)
            #expect(warning.contains("Action: delayed"))
            #expect(warning.contains("Will-Retry-Until:"))
            #expect(warning.contains("Status: 4.4.1"))
        }
    }

    @Test func anUnknownLocalMailboxBounces() async throws {
        try await withScheduler { queue, scheduler, mailRoot in
            let id = try await enqueue(queue, to: ["nobody@local.test"], from: "bob@local.test")
            scheduler.submit(id)
            try await eventually("bounced to bob") { newMail(mailRoot, "bob").count == 1 }
            try await eventually("removed") { queue.message(id) == nil }
        }
    }
}
