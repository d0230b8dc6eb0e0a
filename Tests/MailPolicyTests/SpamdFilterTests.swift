import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import MailPolicy

/// What spamd 4.0.1 answers to SYMBOLS and HEADERS for GTUBE (recorded from a live spamd).
private let gtubeSymbolsAnswer =
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 68\r\nSpam: True ; 1003.3 / 5.0\r\n\r\n"
    + "GTUBE,MISSING_DATE,MISSING_MID,NO_RECEIVED,NO_RELAYS,TVD_SPACE_RATIO"
private let hamHeadersAnswerBody =
    "X-Spam-Checker-Version: SpamAssassin 4.0.1 (2024-03-25) on vm\r\nX-Spam-Level: \r\n"
    + "X-Spam-Status: No, score=-0.0 required=5.0 tests=MSGID_SHORT,NO_RECEIVED,\r\n"
    + "\tNO_RELAYS autolearn=unavailable autolearn_force=no version=4.0.1\r\n"
    + "Subject: [SPAM?] Lunch\r\nFrom: Alice <alice@sender.test>\r\n\r\n"

private func answer(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

@Suite struct SpamdFilterTests {
    @Test func requestIsSpamcFormat() throws {
        let message = ByteBuffer(string: "Subject: x\r\n\r\nbody\r\n")
        let request = try SpamdRequest.encode(command: .symbols, user: "mail", message: message, peer: "spamd")
        #expect(
            String(buffer: request)
                == "SYMBOLS SPAMC/1.5\r\nContent-length: 20\r\nUser: mail\r\n\r\nSubject: x\r\n\r\nbody\r\n")
        let anonymous = try SpamdRequest.encode(command: .headers, user: nil, message: message, peer: "spamd")
        #expect(String(buffer: anonymous).hasPrefix("HEADERS SPAMC/1.5\r\nContent-length: 20\r\n\r\nSubject"))
        #expect(throws: FilterError.self) {
            try SpamdRequest.encode(command: .symbols, user: "mail\r\nUser: root", message: message, peer: "spamd")
        }
    }

    @Test func symbolsAnswerParses() throws {
        let response = try #require(try SpamdResponse.parse(answer(gtubeSymbolsAnswer), atEnd: false, peer: "spamd"))
        #expect(response.isSpam && response.score == 1003.3 && response.threshold == 5.0)
        let verdict = try response.verdict(filter: "spamd", command: .symbols, message: sampleMessage, peer: "spamd")
        #expect(
            verdict.symbols == ["GTUBE", "MISSING_DATE", "MISSING_MID", "NO_RECEIVED", "NO_RELAYS", "TVD_SPACE_RATIO"])
        #expect(verdict.action == .none && verdict.headersToAdd.isEmpty)
    }

    /// Every cut of a complete answer is incomplete, and the complete one parses the same
    /// whatever came before: spamd may write its status line and the rest separately.
    @Test func answerNeedsAllItsBytes() throws {
        let whole = answer(gtubeSymbolsAnswer)
        for length in 0..<whole.readableBytes {
            #expect(try SpamdResponse.parse(whole.getSlice(at: 0, length: length)!, atEnd: false, peer: "s") == nil)
        }
        // Bytes after the Content-length are not part of the answer.
        let padded = answer(gtubeSymbolsAnswer + "TRAILING")
        #expect(
            try SpamdResponse.parse(padded, atEnd: true, peer: "s")
                == SpamdResponse.parse(whole, atEnd: false, peer: "s"))
    }

    @Test(arguments: [
        // Without Content-length (CHECK, or protocol < 1.3) the body runs to the end.
        ("SPAMD/1.1 0 EX_OK\r\nSpam: False ; -0.0 / 5.0\r\n\r\n", false, -0.0, ""),
        ("SPAMD/1.1 0 EX_OK\nSpam: Yes ; 7.5 / 5.0\n\nA,B", true, 7.5, "A,B"),
        ("SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: True ; 5.0 / 5.0\r\nX-Future: 1\r\n\r\n", true, 5.0, ""),
    ])
    func answersAtTheEnd(text: String, isSpam: Bool, score: Double, body: String) throws {
        let response = try #require(try SpamdResponse.parse(answer(text), atEnd: true, peer: "s"))
        #expect(response.isSpam == isSpam && response.score == score && String(buffer: response.body) == body)
    }

    @Test(arguments: [
        ("SPAMD/1.0 76 Bad header line: (Content-Length mismatch)\r\n", "EX_PROTOCOL: Bad header line"),
        ("SPAMD/1.0 69 Service Unavailable: x\r\n", "EX_UNAVAILABLE"),
        ("SPAMD/1.0 79 Timeout: (30 second timeout while trying to CHECK)\r\n", "EX_TIMEOUT"),
        ("SPAMD/1.0 99 odd\r\n", "code 99"),
    ])
    func errorStatusFailsAtOnce(text: String, expected: String) {
        #expect {
            _ = try SpamdResponse.parse(answer(text), atEnd: false, peer: "spamd")
        } throws: { error in
            guard case .filterFailed(let detail) = error as? FilterError else { return false }
            return detail.contains(expected)
        }
    }

    @Test(arguments: [
        "HTTP/1.1 200 OK\r\n\r\n",
        "SPAMD/1.1 zero EX_OK\r\n\r\n",
        "SPAMD/1.1 0 EX_OK\r\n\r\n",  // no Spam header
        "SPAMD/1.1 0 EX_OK\r\nSpam: Maybe ; 1 / 5\r\n\r\n",
        "SPAMD/1.1 0 EX_OK\r\nSpam: True ; x / 5\r\n\r\n",
        "SPAMD/1.1 0 EX_OK\r\nSpam: True ; nan / 5\r\n\r\n",
        "SPAMD/1.1 0 EX_OK\r\nContent-length: -1\r\nSpam: True ; 1 / 5\r\n\r\n",
        "SPAMD/1.1 0 EX_OK\r\nno colon\r\n\r\n",
    ])
    func malformedAnswers(text: String) {
        #expect {
            _ = try SpamdResponse.parse(answer(text), atEnd: true, peer: "spamd")
        } throws: { error in
            guard case .malformedReply = error as? FilterError else { return false }
            return true
        }
    }

    @Test func hostileAnswersAreBounded() {
        let longLine = String(repeating: "A", count: 5000)
        #expect(throws: FilterError.self) {
            try SpamdResponse.parse(answer(longLine), atEnd: false, peer: "s")
        }
        let manyHeaders = "SPAMD/1.1 0 EX_OK\r\n" + String(repeating: "X: y\r\n", count: 100)
        #expect(throws: FilterError.self) {
            try SpamdResponse.parse(answer(manyHeaders), atEnd: false, peer: "s")
        }
        // Cut short: an error, not a verdict.
        #expect(throws: FilterError.self) {
            try SpamdResponse.parse(
                answer("SPAMD/1.1 0 EX_OK\r\nContent-length: 10\r\nSpam: True ; 1 / 5\r\n\r\nABC"),
                atEnd: true, peer: "s")
        }
        #expect(throws: FilterError.self) { try SpamdResponse.parse(answer(""), atEnd: true, peer: "s") }
    }

    @Test func headersAnswerGivesFieldsAndSubject() throws {
        let text =
            "SPAMD/1.1 0 EX_OK\r\nContent-length: \(hamHeadersAnswerBody.utf8.count)\r\n"
            + "Spam: False ; -0.0 / 5.0\r\n\r\n" + hamHeadersAnswerBody
        let response = try #require(try SpamdResponse.parse(answer(text), atEnd: false, peer: "s"))
        let verdict = try response.verdict(filter: "spamd", command: .headers, message: sampleMessage, peer: "s")
        #expect(verdict.headersToAdd.map(\.name) == ["X-Spam-Checker-Version", "X-Spam-Level", "X-Spam-Status"])
        #expect(verdict.headersToAdd[1].value == "")
        #expect(
            verdict.headersToAdd[2].value
                == "No, score=-0.0 required=5.0 tests=MSGID_SHORT,NO_RECEIVED,\r\n\tNO_RELAYS autolearn=unavailable autolearn_force=no version=4.0.1"
        )
        #expect(verdict.symbols == ["MSGID_SHORT", "NO_RECEIVED", "NO_RELAYS"])
        #expect(
            verdict.headerChanges == [.replace(FilterHeaderField(name: "Subject", value: "[SPAM?] Lunch"), instance: 1)]
        )
        #expect(SpamdResponse.tests(inStatus: "No, score=0.0 required=5.0 tests=none autolearn=ham") == [])
    }

    // MARK: Over a socket

    /// A spamd that reads one request and answers with `reply`, one byte per write to make
    /// the client assemble it; it records the request.
    private func fakeSpamd(
        reply: String, record: NIOLockedValueBox<ByteBuffer>? = nil
    ) async throws -> FakeFilterServer<ByteBuffer, ByteBuffer> {
        try await FakeFilterServer<ByteBuffer, ByteBuffer>.start { inbound, outbound in
            var request = ByteBuffer()
            // The header ends at the empty line; then Content-length bytes.
            while !String(buffer: request).contains("\r\n\r\n"), var chunk = try await inbound.next() {
                request.writeBuffer(&chunk)
            }
            let head = String(buffer: request).components(separatedBy: "\r\n\r\n")[0]
            let length =
                head.split(separator: "\r\n").first { $0.hasPrefix("Content-length: ") }
                .flatMap { Int($0.dropFirst(16)) } ?? 0
            let wanted = head.utf8.count + 4 + length
            while request.readableBytes < wanted, var chunk = try await inbound.next() { request.writeBuffer(&chunk) }
            record?.withLockedValue { $0 = request }
            for byte in reply.utf8 { try await outbound.write(ByteBuffer(bytes: [byte])) }
        }
    }

    @Test func checksOverTCP() async throws {
        let record = NIOLockedValueBox(ByteBuffer())
        let server = try await fakeSpamd(reply: gtubeSymbolsAnswer, record: record)
        defer { server.stop() }
        let filter = SpamdFilter(endpoint: server.endpoint, user: "tern")
        let verdict = try await filter.check(sampleMessage, envelope: sampleEnvelope)
        #expect(verdict.filter == "spamd" && verdict.isSpam == true && verdict.score == 1003.3)
        #expect(verdict.threshold == 5.0 && verdict.symbols.first == "GTUBE")
        var expected = ByteBuffer(
            string: "SYMBOLS SPAMC/1.5\r\nContent-length: \(sampleMessage.readableBytes)\r\nUser: tern\r\n\r\n")
        expected.writeImmutableBuffer(sampleMessage)
        #expect(record.withLockedValue { $0 } == expected)
    }

    @Test func checksOverUnixSocket() async throws {
        let path = temporarySocketPath("spamd")
        let server = try await FakeFilterServer<ByteBuffer, ByteBuffer>.start(unixPath: path) { inbound, outbound in
            _ = try await read(&inbound, count: 60)
            try await outbound.write(
                answer("SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: False ; 0.1 / 5.0\r\n\r\n"))
        }
        defer {
            server.stop()
            unlink(path)
        }
        let verdict = try await SpamdFilter(endpoint: .unix(path: path)).check(sampleMessage, envelope: sampleEnvelope)
        #expect(verdict.isSpam == false && verdict.score == 0.1 && verdict.symbols.isEmpty)
    }

    @Test func spamdErrorIsFilterFailed() async throws {
        let server = try await fakeSpamd(reply: "SPAMD/1.0 75 Service Unavailable: load too high\r\n")
        defer { server.stop() }
        await #expect {
            _ = try await SpamdFilter(endpoint: server.endpoint).check(sampleMessage, envelope: sampleEnvelope)
        } throws: { error in
            guard case .filterFailed(let detail) = error as? FilterError else { return false }
            return detail.contains("EX_TEMPFAIL") && detail.contains("load too high")
        }
    }

    @Test func closingEarlyIsConnectionClosed() async throws {
        let server = try await fakeSpamd(reply: "SPAMD/1.1 0 EX_OK\r\nContent-length: 100\r\nSpam: True")
        defer { server.stop() }
        await #expect {
            _ = try await SpamdFilter(endpoint: server.endpoint).check(sampleMessage, envelope: sampleEnvelope)
        } throws: { error in
            guard case .connectionClosed = error as? FilterError else { return false }
            return true
        }
    }

    @Test func endlessAnswerIsTooLarge() async throws {
        let server = try await FakeFilterServer<ByteBuffer, ByteBuffer>.start { inbound, outbound in
            _ = try await inbound.next()
            try await outbound.write(
                answer("SPAMD/1.1 0 EX_OK\r\nContent-length: 100000000\r\nSpam: True ; 1 / 5\r\n\r\n"))
            let block = ByteBuffer(repeating: UInt8(ascii: "A"), count: 64 << 10)
            while true { try await outbound.write(block) }
        }
        defer { server.stop() }
        let filter = SpamdFilter(endpoint: server.endpoint, maximumReplySize: 256 << 10)
        await #expect {
            _ = try await filter.check(sampleMessage, envelope: sampleEnvelope)
        } throws: { error in
            guard case .replyTooLarge = error as? FilterError else { return false }
            return true
        }
    }

    // MARK: A live spamd

    static let spamdPath = "/usr/sbin/spamd"

    /// Starts the real spamd on a free loopback port with a private site configuration
    /// (the system's plugin loading `.pre` files, no Bayes, no network tests), runs the GTUBE
    /// test message and a plain one through it, and stops it.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: spamdPath)), .timeLimit(.minutes(2)))
    func liveSpamd() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tern-spamd-\(UUID().uuidString)")
        let site = directory.appendingPathComponent("site")
        try FileManager.default.createDirectory(at: site, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory.path)
        for file in (try? FileManager.default.contentsOfDirectory(atPath: "/etc/spamassassin")) ?? []
        where file.hasSuffix(".pre") {
            try FileManager.default.copyItem(
                atPath: "/etc/spamassassin/\(file)", toPath: site.appendingPathComponent(file).path)
        }
        try "use_bayes 0\nbayes_auto_learn 0\n".write(
            to: site.appendingPathComponent("local.cf"), atomically: true, encoding: .utf8)

        // A port that is free now; spamd cannot take port 0.
        let probe = try await FakeFilterServer<ByteBuffer, ByteBuffer>.start { _, _ in }
        guard case .tcp(_, let port) = probe.endpoint else { return }
        probe.stop()
        try await Task.sleep(for: .milliseconds(100))

        // Through perl, which clears the blocked-signal mask the test runner passes on, so that
        // spamd's SIGTERM handler (which also stops its children) can run.
        var arguments = [
            "-MPOSIX", "-e", "sigprocmask(SIG_SETMASK, POSIX::SigSet->new); exec @ARGV or die", Self.spamdPath,
            "--listen=127.0.0.1:\(port)", "--allowed-ips=127.0.0.1", "--local", "--nouser-config",
            "--siteconfigpath=\(site.path)", "--pidfile=\(directory.appendingPathComponent("spamd.pid").path)",
            "--syslog=stderr", "--max-children=1", "--min-spare=1", "--max-spare=1",
        ]
        // spamd refuses to run as root; as root it takes a user to switch to.
        if geteuid() == 0 { arguments.append("--username=nobody") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/perl")
        process.arguments = arguments
        let log = directory.appendingPathComponent("spamd.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: log)
        process.standardOutput = FileHandle.nullDevice

        let filter = SpamdFilter(endpoint: .tcp(host: "127.0.0.1", port: port))
        let gtube = ByteBuffer(
            string: "Subject: test\r\nFrom: a@example.test\r\nTo: b@example.test\r\n\r\n"
                + "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n")
        try await whileRunning(process) {
            let spam = try await firstVerdict(of: filter, for: gtube, attempts: 300) { process.isRunning }
            let logText = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            let verdict = try #require(spam, "spamd did not answer; its log:\n\(logText)")
            #expect(verdict.isSpam == true)
            #expect((verdict.score ?? 0) >= 1000)
            #expect(verdict.symbols.contains("GTUBE"))

            let ham = try await filter.check(sampleMessage, envelope: sampleEnvelope)
            #expect(ham.isSpam == false)
            #expect((ham.score ?? 99) < 5)

            let headers = try await SpamdFilter(endpoint: filter.endpoint, command: .headers).check(
                gtube, envelope: sampleEnvelope)
            #expect(headers.headersToAdd.contains { $0.name == "X-Spam-Flag" && $0.value == "YES" })
            #expect(headers.symbols.contains("GTUBE"))
        }
    }
}
