import NIOCore
import Testing

@testable import MailQueue

@Suite struct MessageSpoolTests {
    /// The end of DATA rewrites the header: the same result whether the message is still in
    /// memory or already in its spool file, and whether it then goes inline or to its own file.
    @Test(arguments: [100, 5_000, 300_000])
    func replacePrefixKeepsTheRest(size: Int) async throws {
        try await withQueueDirectory { directory in
            let store = try openStore(directory, QueueStore.Options(inlineLimit: 200_000, spoolMemoryLimit: 4096))
            defer { store.close() }
            let header = Array("Subject: hello\r\nX-Old: 1\r\n\r\n".utf8)
            let body = messageBytes(size)
            let spool = try store.makeSpool()
            var offset = 0
            let all = header + body
            while offset < all.count {
                let end = min(all.count, offset + 1000)
                try spool.write(ByteBuffer(bytes: all[offset..<end]))
                offset = end
            }
            let replacement = Array("Authentication-Results: x; none\r\nSubject: [SPAM] hello\r\n\r\n".utf8)
            try spool.replacePrefix(length: header.count, with: ByteBuffer(bytes: replacement))
            #expect(spool.byteCount == replacement.count + body.count)
            let start = try spool.prefix(replacement.count + 10)
            #expect(Array(start.readableBytesView) == Array((replacement + body).prefix(replacement.count + 10)))
            let queued = try await store.commit(spool, envelope: simpleEnvelope, held: true)
            #expect(queued.held)
            #expect(store.message(queued.id)?.held == true)
            #expect(try readAll(store, queued.id) == replacement + body)
        }
    }

    @Test func prefixIsBounded() async throws {
        try await withQueueDirectory { directory in
            let store = try openStore(directory, QueueStore.Options(spoolMemoryLimit: 1024))
            defer { store.close() }
            let spool = try store.makeSpool()
            let bytes = messageBytes(3000)
            try spool.write(ByteBuffer(bytes: bytes))
            #expect(Array(try spool.prefix(10).readableBytesView) == Array(bytes.prefix(10)))
            #expect(Array(try spool.prefix(10_000).readableBytesView) == bytes)
            spool.discard()
        }
    }
}
