import Foundation
import Testing

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
