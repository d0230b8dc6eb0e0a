import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import SMTPProtocol
import Testing

@testable import MailPolicy

/// What rspamd 3.4 answered for a plain message (recorded from a live rspamd, shortened).
private let addHeaderAnswer = """
    {"is_skipped":false,"score":7.0,"required_score":15.0,"action":"add header","symbols":{\
    "HFILTER_HOSTNAME_UNKNOWN":{"name":"HFILTER_HOSTNAME_UNKNOWN","score":2.5,"metric_score":2.5},\
    "ARC_NA":{"name":"ARC_NA","score":0.0,"metric_score":0.0},\
    "MIME_GOOD":{"name":"MIME_GOOD","score":-0.1,"metric_score":-0.1,"options":["text/plain"]},\
    "RDNS_NONE":{"name":"RDNS_NONE","score":1.0,"metric_score":1.0}},\
    "messages":{},"message-id":"1@example.test","time_real":0.013684,\
    "milter":{"remove_headers":{"X-Spam":0}}}
    """

private func verdict(_ json: String) throws -> FilterVerdict {
    try JSONDecoder().decode(RspamdReply.self, from: Data(json.utf8)).verdict(filter: "rspamd", peer: "rspamd")
}

@Suite struct RspamdFilterTests {
    @Test func recordedAnswerGivesScoreSymbolsAndChanges() throws {
        let result = try verdict(addHeaderAnswer)
        #expect(result.score == 7.0 && result.threshold == 15.0 && result.isSpam == true && result.action == .none)
        #expect(result.symbols == ["HFILTER_HOSTNAME_UNKNOWN", "RDNS_NONE", "ARC_NA", "MIME_GOOD"])
        #expect(result.headerChanges == [.delete(name: "X-Spam", instance: 0)])
    }

    @Test(
        arguments: [
            ("no action", nil, FilterAction.none, false as Bool?),
            ("greylist", nil, .tempfail(SMTPReply(451, EnhancedStatusCode(4, 7, 1), "Try again later")), false),
            ("add header", nil, .none, true),
            ("rewrite subject", nil, .none, true),
            (
                "soft reject", "Rate limit exceeded",
                .tempfail(SMTPReply(451, EnhancedStatusCode(4, 7, 1), "Rate limit exceeded")), nil
            ),
            ("reject", "Gtube pattern", .reject(SMTPReply(554, EnhancedStatusCode(5, 7, 1), "Gtube pattern")), true),
            ("reject", nil, .reject(SMTPReply(554, EnhancedStatusCode(5, 7, 1), "Spam message rejected")), true),
            ("discard", nil, .discard, true),
            ("quarantine", "Held for review", .quarantine(reason: "Held for review"), true),
            ("something new", nil, .none, nil),
        ] as [(String, String?, FilterAction, Bool?)])
    func actionsMapToVerdicts(action: String, message: String?, expected: FilterAction, isSpam: Bool?) throws {
        let messages = message.map { #"{"smtp_message":"\#($0)"}"# } ?? "{}"
        let result = try verdict(#"{"action":"\#(action)","score":1.5,"required_score":15,"messages":\#(messages)}"#)
        #expect(result.action == expected)
        #expect(result.isSpam == isSpam)
    }

    @Test func milterBlockAndSubjectAndSignature() throws {
        let result = try verdict(
            """
            {"action":"rewrite subject","score":9,"required_score":15,"subject":"*** SPAM *** Lunch",
             "dkim-signature":"v=1; a=rsa-sha256; d=example.test;\\r\\n\\tb=abc",
             "milter":{
               "add_headers":{
                 "X-Spamd-Bar":"+++++++",
                 "X-Rspamd-Server":{"value":"vm","order":0},
                 "X-Spam-Status":[{"value":"Yes, score=9","order":-1},{"value":"second","order":2}]
               },
               "remove_headers":{"X-Spam":0,"X-Old":[1,-1]},
               "change_from":"<bounce@example.test>",
               "add_rcpt":["archive@example.test"],
               "del_rcpt":"bob@example.test"}}
            """)
        #expect(
            result.headersToAdd == [
                FilterHeaderField(name: "X-Spam-Status", value: "Yes, score=9"),
                FilterHeaderField(name: "X-Spamd-Bar", value: "+++++++"),
            ])
        #expect(
            result.headerChanges == [
                .replace(FilterHeaderField(name: "Subject", value: "*** SPAM *** Lunch"), instance: 1),
                .delete(name: "X-Old", instance: 1), .delete(name: "X-Old", instance: -1),
                .delete(name: "X-Spam", instance: 0),
                .insert(FilterHeaderField(name: "X-Rspamd-Server", value: "vm"), at: 0),
                .insert(FilterHeaderField(name: "X-Spam-Status", value: "second"), at: 2),
                .insert(
                    FilterHeaderField(name: "DKIM-Signature", value: "v=1; a=rsa-sha256; d=example.test;\r\n\tb=abc"),
                    at: 0),
            ])
        #expect(
            result.envelopeChanges == [
                .changeSender("<bounce@example.test>", parameters: nil),
                .addRecipient("archive@example.test", parameters: nil), .deleteRecipient("bob@example.test"),
            ])
    }

    @Test func hostileAnswersAreErrors() {
        // A header name that would break the header section.
        #expect(throws: FilterError.self) {
            try verdict(#"{"action":"add header","milter":{"add_headers":{"X-Bad\r\nInjected":"v"}}}"#)
        }
        #expect(throws: FilterError.self) { try verdict(#"{"score":1}"#) }
        // A value with a bare line break stays inside its field.
        let folded = try? verdict(#"{"action":"add header","milter":{"add_headers":{"X-A":"v\nX-Injected: 1"}}}"#)
        #expect(folded?.headersToAdd == [FilterHeaderField(name: "X-A", value: "v\r\n\tX-Injected: 1")])
        // An smtp_message cannot add lines to the reply.
        let reply = try? verdict(#"{"action":"reject","messages":{"smtp_message":"a\r\n550 b"}}"#)
        #expect(reply?.action == .reject(SMTPReply(554, EnhancedStatusCode(5, 7, 1), "a 550 b")))
    }

    @Test func requestCarriesTheEnvelope() {
        let head = RspamdFilter.requestHead(
            endpoint: .tcp(host: "127.0.0.1", port: 11333), envelope: sampleEnvelope, contentLength: 42)
        #expect(head.method == .POST && head.uri == "/checkv2")
        #expect(head.headers["Host"] == ["127.0.0.1:11333"])
        #expect(head.headers["IP"] == ["192.0.2.7"])
        #expect(head.headers["Helo"] == ["mail.sender.test"] && head.headers["Hostname"] == ["mail.sender.test"])
        #expect(head.headers["From"] == ["alice@sender.test"])
        #expect(head.headers["Rcpt"] == ["bob@example.test", "carol@example.test"])
        #expect(head.headers["Queue-Id"] == ["4Q2X7A1B"] && head.headers["MTA-Name"] == ["mx.example.test"])
        #expect(head.headers["User"].isEmpty && head.headers["Content-Length"] == ["42"])

        var local = sampleEnvelope
        local.clientAddress = IPAddress("::ffff:192.0.2.8")
        local.sender = ""
        local.authenticatedUser = "alice"
        local.helo = "bad\r\nInjected: 1"
        let other = RspamdFilter.requestHead(
            endpoint: .unix(path: "/run/rspamd.sock"), envelope: local, contentLength: 1)
        #expect(other.headers["IP"] == ["192.0.2.8"] && other.headers["From"] == ["<>"])
        #expect(other.headers["User"] == ["alice"] && other.headers["Helo"].isEmpty)
        #expect(other.headers["Host"] == ["localhost"])
    }

    // MARK: Over a socket

    /// An rspamd that answers every request with `status` and `body` (chunked when `chunked`),
    /// recording the request.
    private func fakeRspamd(
        status: HTTPResponseStatus = .ok, body: String, chunked: Bool = false,
        record: NIOLockedValueBox<(HTTPRequestHead?, ByteBuffer)>? = nil
    ) async throws -> FakeFilterServer<HTTPServerRequestPart, HTTPServerResponsePart> {
        try await FakeFilterServer<HTTPServerRequestPart, HTTPServerResponsePart>.start(
            configure: { channel in try channel.pipeline.syncOperations.configureHTTPServerPipeline() }
        ) { inbound, outbound in
            var head: HTTPRequestHead?
            var received = ByteBuffer()
            loop: while let part = try await inbound.next() {
                switch part {
                case .head(let requestHead): head = requestHead
                case .body(var chunk): received.writeBuffer(&chunk)
                case .end: break loop
                }
            }
            record?.withLockedValue { $0 = (head, received) }
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "application/json")
            if !chunked { headers.add(name: "Content-Length", value: "\(body.utf8.count)") }
            try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers)))
            for piece in chunked ? body.map({ String($0) }) : [body] {
                try await outbound.write(.body(.byteBuffer(ByteBuffer(string: piece))))
            }
            try await outbound.write(.end(nil))
        }
    }

    @Test func checksOverHTTP() async throws {
        let record = NIOLockedValueBox<(HTTPRequestHead?, ByteBuffer)>((nil, ByteBuffer()))
        let server = try await fakeRspamd(
            body: #"{"action":"reject","score":1000,"required_score":15,"symbols":{"GTUBE":{"score":0}},"#
                + #""messages":{"smtp_message":"Gtube pattern"}}"#,
            record: record)
        defer { server.stop() }
        let result = try await RspamdFilter(endpoint: server.endpoint).check(sampleMessage, envelope: sampleEnvelope)
        #expect(
            result.filter == "rspamd"
                && result.action == .reject(SMTPReply(554, EnhancedStatusCode(5, 7, 1), "Gtube pattern")))
        #expect(result.symbols == ["GTUBE"] && result.score == 1000)
        let (head, body) = record.withLockedValue { $0 }
        #expect(
            head?.uri == "/checkv2" && head?.headers["Rcpt"].count == 2 && head?.headers["Queue-Id"] == ["4Q2X7A1B"])
        #expect(body == sampleMessage)
    }

    @Test func chunkedAnswerOverUnixSocket() async throws {
        let path = temporarySocketPath("rspamd")
        let server = try await FakeFilterServer<HTTPServerRequestPart, HTTPServerResponsePart>.start(
            unixPath: path, configure: { try $0.pipeline.syncOperations.configureHTTPServerPipeline() }
        ) { inbound, outbound in
            while let part = try await inbound.next() { if case .end = part { break } }
            try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: .ok)))
            for piece in [#"{"action":"no"#, #" action","score":-1.5}"#] {
                try await outbound.write(.body(.byteBuffer(ByteBuffer(string: piece))))
            }
            try await outbound.write(.end(nil))
        }
        defer {
            server.stop()
            unlink(path)
        }
        let result = try await RspamdFilter(endpoint: .unix(path: path)).check(sampleMessage, envelope: sampleEnvelope)
        #expect(result.action == .none && result.isSpam == false && result.score == -1.5)
    }

    @Test func httpErrorIsFilterFailed() async throws {
        let server = try await fakeRspamd(status: .internalServerError, body: #"{"error":"cannot parse message"}"#)
        defer { server.stop() }
        await #expect {
            _ = try await RspamdFilter(endpoint: server.endpoint).check(sampleMessage, envelope: sampleEnvelope)
        } throws: { error in
            guard case .filterFailed(let detail) = error as? FilterError else { return false }
            return detail.contains("HTTP 500") && detail.contains("cannot parse message")
        }
    }

    @Test func notJSONIsMalformed() async throws {
        let server = try await fakeRspamd(body: "<html>proxy error</html>", chunked: true)
        defer { server.stop() }
        await #expect {
            _ = try await RspamdFilter(endpoint: server.endpoint).check(sampleMessage, envelope: sampleEnvelope)
        } throws: { error in
            guard case .malformedReply = error as? FilterError else { return false }
            return true
        }
    }

    @Test func largeAnswerIsTooLarge() async throws {
        let server = try await fakeRspamd(
            body: #"{"action":"no action","pad":""# + String(repeating: "x", count: 300_000) + #""}"#)
        defer { server.stop() }
        await #expect {
            _ = try await RspamdFilter(endpoint: server.endpoint, maximumReplySize: 100_000).check(
                sampleMessage, envelope: sampleEnvelope)
        } throws: { error in
            guard case .replyTooLarge = error as? FilterError else { return false }
            return true
        }
    }
}
