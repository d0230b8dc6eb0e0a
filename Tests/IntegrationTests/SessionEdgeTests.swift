import Foundation
import NIOCore
import Testing

@testable import SMTPServer

/// Sessions that end in ways a transcript cannot show.
@Suite struct SessionEdgeTests {
    /// The client sends the final dot and hangs up without waiting for the reply. The message
    /// is committed all the same: it must be logged as queued and delivered, not left for the
    /// next scan or dropped half-owned.
    @Test func hangingUpAfterTheFinalDotStillQueuesAndDelivers() async throws {
        let server = try await TestServer.start()
        do {
            try await hangUpFiveTimes(server)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    private func hangUpFiveTimes(_ server: TestServer) async throws {
        for number in 0..<5 {
            let client = try SMTPTestClient(port: server.port)
            _ = try client.reply()
            _ = try client.command("EHLO client.example")
            #expect(try client.command("MAIL FROM:<a@client.example>").hasPrefix("250"))
            #expect(try client.command("RCPT TO:<alice@example.test>").hasPrefix("250"))
            #expect(try client.command("DATA").hasPrefix("354"))
            try client.send("Subject: hang-up \(number)\r\n\r\nbody\r\n.\r\n")
            client.close()
        }
        // Well before the scheduler's 5 s scan: delivery must come from the commit itself.
        let deadline = ContinuousClock.now + .seconds(3)
        while server.maildirCount("alice") < 5 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(server.maildirCount("alice") == 5)
        #expect(server.log.components(separatedBy: "event=queued").count - 1 == 5)
        for number in 0..<5 {
            #expect(server.maildirMessages("alice").contains { $0.contains("Subject: hang-up \(number)\r\n") })
        }
    }
}

/// The ServerHello fields `TLSCipherSniffer` reads, on handmade records.
@Suite struct TLSCipherSnifferTests {
    /// A TLS record holding a ServerHello with `sessionID` octets of session ID and `suite`.
    static func serverHello(sessionID: Int, suite: UInt16, recordType: UInt8 = 22, messageType: UInt8 = 2) -> ByteBuffer
    {
        var buffer = ByteBuffer()
        buffer.writeInteger(recordType)
        buffer.writeInteger(UInt16(0x0303))
        buffer.writeInteger(UInt16(4 + 2 + 32 + 1 + sessionID + 3))
        buffer.writeInteger(messageType)
        buffer.writeBytes([0, 0, UInt8(2 + 32 + 1 + sessionID + 3)])
        buffer.writeInteger(UInt16(0x0303))
        buffer.writeBytes([UInt8](repeating: 7, count: 32))
        buffer.writeInteger(UInt8(sessionID))
        buffer.writeBytes([UInt8](repeating: 9, count: sessionID))
        buffer.writeInteger(suite)
        buffer.writeInteger(UInt8(0))
        return buffer
    }

    @Test(arguments: [(0, UInt16(0x1301)), (32, 0x1302), (16, 0xC02F)])
    func readsTheSuite(sessionID: Int, suite: UInt16) {
        let hello = Self.serverHello(sessionID: sessionID, suite: suite)
        #expect(TLSCipherSniffer.cipherSuite(in: hello) == .some(.some(suite)))
        // Every shorter prefix asks for more.
        for length in 0..<(5 + 4 + 2 + 32 + 1 + sessionID + 2) {
            #expect(TLSCipherSniffer.cipherSuite(in: hello.getSlice(at: 0, length: length)!) == .none)
        }
    }

    @Test func otherRecordsAreNotHellos() {
        #expect(
            TLSCipherSniffer.cipherSuite(in: Self.serverHello(sessionID: 0, suite: 1, recordType: 21)) == .some(nil))
        #expect(
            TLSCipherSniffer.cipherSuite(in: Self.serverHello(sessionID: 0, suite: 1, messageType: 1)) == .some(nil))
        #expect(TLSCipherSniffer.cipherSuite(in: Self.serverHello(sessionID: 40, suite: 1)) == .some(nil))
    }

    @Test func namesFollowIANA() {
        #expect(TLSCipherSniffer.name(of: 0x1302) == "TLS_AES_256_GCM_SHA384")
        #expect(TLSCipherSniffer.name(of: 0xC030) == "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384")
        #expect(TLSCipherSniffer.name(of: 0xABCD) == "0xABCD")
    }
}
