import CZlib
import Foundation
import MailMessage
import SMTPProtocol

/// One aggregate report (RFC 8460 §4.4) about one domain for one period; its JSON field names
/// are the RFC's.
public struct TLSReport: Encodable, Sendable {
    public struct DateRange: Encodable, Sendable {
        var startDatetime: String
        var endDatetime: String

        enum CodingKeys: String, CodingKey {
            case startDatetime = "start-datetime"
            case endDatetime = "end-datetime"
        }
    }

    public struct Policy: Encodable, Sendable {
        var policyType: String
        var policyString: [String]?
        var policyDomain: String
        var mxHost: [String]?

        enum CodingKeys: String, CodingKey {
            case policyType = "policy-type"
            case policyString = "policy-string"
            case policyDomain = "policy-domain"
            case mxHost = "mx-host"
        }
    }

    public struct Summary: Encodable, Sendable {
        var successful: Int
        var failed: Int

        enum CodingKeys: String, CodingKey {
            case successful = "total-successful-session-count"
            case failed = "total-failure-session-count"
        }
    }

    public struct FailureDetail: Encodable, Sendable {
        var resultType: String
        var sendingMTAIP: String?
        var receivingMXHostname: String?
        var receivingIP: String?
        var failedSessionCount: Int
        var failureReasonCode: String?

        enum CodingKeys: String, CodingKey {
            case resultType = "result-type"
            case sendingMTAIP = "sending-mta-ip"
            case receivingMXHostname = "receiving-mx-hostname"
            case receivingIP = "receiving-ip"
            case failedSessionCount = "failed-session-count"
            case failureReasonCode = "failure-reason-code"
        }
    }

    public struct PolicyReport: Encodable, Sendable {
        var policy: Policy
        var summary: Summary
        var failureDetails: [FailureDetail]

        enum CodingKeys: String, CodingKey {
            case policy
            case summary
            case failureDetails = "failure-details"
        }
    }

    var organizationName: String
    var dateRange: DateRange
    var contactInfo: String
    public var reportID: String
    var policies: [PolicyReport]

    enum CodingKeys: String, CodingKey {
        case organizationName = "organization-name"
        case dateRange = "date-range"
        case contactInfo = "contact-info"
        case reportID = "report-id"
        case policies
    }

    /// The report's period, `[start, start + length)` in seconds since 1970.
    public let start: Int
    public let length: Int
    public let domain: String

    /// The report of `results` about `domain`; `submitter` (Tern's hostname) makes the id unique.
    public init(
        domain: String, results: TLSReportStore.DomainResults, periodStart: Int, periodLength: Int,
        organization: String, contact: String, submitter: String
    ) {
        self.domain = domain
        self.start = periodStart
        self.length = periodLength
        self.organizationName = organization
        self.contactInfo = contact
        let begin = Date(timeIntervalSince1970: TimeInterval(periodStart))
        // The RFC's example ends a day at 23:59:59Z: the range is inclusive.
        let end = Date(timeIntervalSince1970: TimeInterval(periodStart + max(1, periodLength) - 1))
        self.dateRange = DateRange(startDatetime: Self.timestamp(begin), endDatetime: Self.timestamp(end))
        self.reportID = "\(Self.compactTimestamp(begin)).\(domain)@\(submitter)"
        self.policies = results.policies.map { results in
            let policy = results.policy
            return PolicyReport(
                policy: Policy(
                    policyType: policy.type.rawValue, policyString: policy.strings.isEmpty ? nil : policy.strings,
                    policyDomain: policy.domain,
                    mxHost: policy.type == .sts && !policy.mxHosts.isEmpty ? policy.mxHosts : nil),
                summary: Summary(successful: results.successes, failed: results.failures),
                failureDetails: results.details.map { detail in
                    FailureDetail(
                        resultType: detail.resultType.rawValue, sendingMTAIP: detail.sendingIP,
                        receivingMXHostname: detail.mxHost, receivingIP: detail.receivingIP,
                        failedSessionCount: detail.count, failureReasonCode: detail.reason)
                })
        }
    }

    /// The JSON text, keys sorted (the RFC does not order them).
    public func json() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? Array(encoder.encode(self))) ?? []
    }

    /// RFC 8460 §5.1: `submitter!policy-domain!begin-timestamp!end-timestamp.json.gz`.
    public func fileName(submitter: String) -> String {
        "\(submitter)!\(domain)!\(start)!\(start + length).json.gz"
    }

    static func timestamp(_ date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02dZ", parts.year ?? 0, parts.month ?? 0, parts.day ?? 0,
            parts.hour ?? 0, parts.minute ?? 0, parts.second ?? 0)
    }

    static func compactTimestamp(_ date: Date) -> String {
        timestamp(date).filter { $0 != "-" && $0 != ":" }
    }
}

/// gzip (RFC 1952) through zlib: `application/tlsrpt+gzip` (RFC 8460 §5.1).
public enum Gzip {
    public static func compress(_ input: [UInt8]) -> [UInt8] {
        var stream = z_stream()
        guard tern_deflate_init_gzip(&stream, Z_DEFAULT_COMPRESSION) == Z_OK else { return [] }
        defer { deflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, UInt(input.count))) + 32)
        var input = input
        let result = input.withUnsafeMutableBufferPointer { source in
            output.withUnsafeMutableBufferPointer { target in
                stream.next_in = source.baseAddress
                stream.avail_in = UInt32(source.count)
                stream.next_out = target.baseAddress
                stream.avail_out = UInt32(target.count)
                return deflate(&stream, Z_FINISH)
            }
        }
        guard result == Z_STREAM_END else { return [] }
        return Array(output.prefix(Int(stream.total_out)))
    }
}

/// The message that carries a report to a `mailto:` address (RFC 8460 §5.3): a
/// `multipart/report; report-type="tlsrpt"` with a short text and the gzipped JSON.
public enum TLSReportMessage {
    public static func render(
        report: TLSReport, gzipped: [UInt8], from: String, to: String, submitter: String, messageID: String,
        date: Date
    ) -> [UInt8] {
        let boundary = "=_tlsrpt_" + messageID.filter { $0.isLetter || $0.isNumber || $0 == "." }
        var lines = [
            "From: TLS reports <\(from)>",
            "To: <\(to)>",
            "Date: \(MessageDate.format(secondsSince1970: Int(date.timeIntervalSince1970)))",
            "Message-ID: <\(messageID)>",
            "Subject: Report Domain: \(report.domain) Submitter: \(submitter) Report-ID: <\(report.reportID)>",
            "TLS-Report-Domain: \(report.domain)",
            "TLS-Report-Submitter: \(submitter)",
            // RFC 8460 §3: reports go without requiring the TLS policy be met (RFC 8689 §5).
            "TLS-Required: No",
            "Auto-Submitted: auto-generated",
            "MIME-Version: 1.0",
            "Content-Type: multipart/report; report-type=\"tlsrpt\";",
            "\tboundary=\"\(boundary)\"",
            "",
            "This is a multipart message in MIME format.",
            "",
            "--\(boundary)",
            "Content-Type: text/plain; charset=\"us-ascii\"",
            "Content-Transfer-Encoding: 7bit",
            "",
            "This is an aggregate TLS report from \(submitter) about \(report.domain).",
            "",
            "--\(boundary)",
            "Content-Type: application/tlsrpt+gzip",
            "Content-Transfer-Encoding: base64",
            "Content-Disposition: attachment;",
            "\tfilename=\"\(report.fileName(submitter: submitter))\"",
            "",
        ]
        let encoded = Array(Base64.encode(gzipped).utf8)
        for start in stride(from: 0, to: encoded.count, by: 76) {
            lines.append(String(decoding: encoded[start..<min(start + 76, encoded.count)], as: UTF8.self))
        }
        lines += ["", "--\(boundary)--", ""]
        return Array(lines.joined(separator: "\r\n").utf8)
    }
}
