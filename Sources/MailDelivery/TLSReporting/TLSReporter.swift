import DNSClient
import Foundation
import Logging
import MailQueue
import NIOCore

/// Sends the TLS-RPT reports (RFC 8460 §4, §5): once a report period (a UTC day) has ended — at
/// start too, for a period that ended while Tern was down — each domain with results and a
/// `_smtp._tls` TXT record gets one report per `rua` destination: a message Tern queues itself
/// for `mailto:`, an HTTPS POST for `https:`. A period is dropped once reported: a destination
/// that fails is logged and not tried again, so nothing is retried forever.
public final class TLSReporter: Sendable {
    public struct Settings: Sendable {
        /// `organization-name`.
        public var organization: String
        /// `contact-info`.
        public var contact: String
        /// Tern's hostname: the report's submitter.
        public var submitter: String
        /// The report's `From:` (envelope sender: null, like every notice).
        public var from: String

        public init(organization: String, contact: String, submitter: String, from: String) {
            self.organization = organization
            self.contact = contact
            self.submitter = submitter
            self.from = from
        }
    }

    /// Destinations per domain at most: a record listing more is abuse.
    static let destinationLimit = 5

    private let settings: Settings
    private let store: TLSReportStore
    private let resolver: any DNSClient.Resolver
    private let uploader: TLSReportUploader?
    private let scheduler: DeliveryScheduler
    private let logger: Logger

    public init(
        settings: Settings, store: TLSReportStore, resolver: any DNSClient.Resolver, uploader: TLSReportUploader?,
        scheduler: DeliveryScheduler, logger: Logger
    ) {
        self.settings = settings
        self.store = store
        self.resolver = resolver
        self.uploader = uploader
        self.scheduler = scheduler
        self.logger = logger
    }

    /// Reports and saves until cancelled; the counters are written every minute at least (a
    /// quarter of a short test period), and at the end.
    public func run() async {
        let interval = Duration.seconds(min(60, max(1, store.period / 4)))
        await reportEndedPeriods()
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            store.flush()
            guard !Task.isCancelled else { break }
            await reportEndedPeriods()
        }
        store.flush()
    }

    /// Every period that has ended, oldest first.
    public func reportEndedPeriods() async {
        for start in store.endedPeriods(at: Date()) {
            let domains = store.results(period: start)
            for domain in domains.keys.sorted() {
                guard !Task.isCancelled else { return }
                guard let results = domains[domain], let record = await discover(domain) else { continue }
                let report = TLSReport(
                    domain: domain, results: results, periodStart: start, periodLength: store.period,
                    organization: settings.organization, contact: settings.contact, submitter: settings.submitter)
                let gzipped = Gzip.compress(report.json())
                for destination in record.destinations.prefix(Self.destinationLimit) {
                    await send(report, gzipped: gzipped, to: destination)
                }
            }
            store.remove(period: start)
            store.flush()
        }
    }

    /// The domain's reporting policy (RFC 8460 §3), through Tern's resolver; nil when it has
    /// none or it cannot be had now.
    func discover(_ domain: String) async -> TLSRPTRecord? {
        let texts: [String]
        do throws(DNSError) {
            texts = try await resolver.txt("_smtp._tls.\(domain)").value
        } catch .nameNotFound, .noData {
            return nil
        } catch {
            logger.info(
                "TLS-RPT record lookup failed",
                metadata: ["event": "tls_rpt", "domain": "\(domain)", "reason": "\(error)"])
            return nil
        }
        do throws(TLSPolicyError) {
            return try TLSRPTRecord.select(from: texts)
        } catch {
            logger.info(
                "TLS-RPT record unusable", metadata: ["event": "tls_rpt", "domain": "\(domain)", "reason": "\(error)"])
            return nil
        }
    }

    private func send(_ report: TLSReport, gzipped: [UInt8], to destination: TLSRPTRecord.Destination) async {
        var metadata: Logger.Metadata = [
            "event": "tls_rpt", "domain": "\(report.domain)", "report_id": "\(report.reportID)",
            "rua": "\(destination)",
        ]
        switch destination {
        case .mailto(let address):
            do {
                let id = QueueID.generate()
                let message = TLSReportMessage.render(
                    report: report, gzipped: gzipped, from: settings.from, to: address, submitter: settings.submitter,
                    messageID: "\(id).tlsrpt@\(settings.submitter)", date: Date())
                let queued = try await scheduler.queueGenerated(message, id: id, to: address)
                metadata["notice"] = "\(queued)"
                logger.info("TLS report queued", metadata: metadata)
            } catch {
                metadata["reason"] = "\(error)"
                logger.error("TLS report could not be queued", metadata: metadata)
            }
        case .https(let url):
            guard let uploader else { return }
            do throws(TLSPolicyError) {
                try await uploader.upload(gzipped, to: url)
                logger.info("TLS report posted", metadata: metadata)
            } catch {
                metadata["reason"] = "\(error)"
                logger.warning("TLS report upload failed; not retried", metadata: metadata)
            }
        }
    }
}

extension DeliveryScheduler {
    /// Queues a message Tern wrote itself (a TLS report) from the null sender, with NOTIFY=NEVER:
    /// a failure goes to postmaster once, like a failed notice, and never loops.
    func queueGenerated(_ message: [UInt8], id: QueueID, to recipient: String) async throws -> QueueID {
        let queue = self.queue
        let spool = try await threadPool.runIfActive {
            let spool = try queue.makeSpool(id: id)
            try spool.write(ByteBuffer(bytes: message))
            return spool
        }
        let envelope = QueueEnvelope(
            sender: "", recipients: [QueuedRecipient(address: recipient, notify: 0)],
            smtpUTF8: !recipient.utf8.allSatisfy { $0 < 0x80 })
        let queued = try await queue.commit(spool, envelope: envelope)
        submit(queued.id)
        return queued.id
    }
}
