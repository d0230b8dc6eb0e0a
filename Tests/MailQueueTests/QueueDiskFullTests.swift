import Foundation
import Glibc
import Logging
import NIOCore
import Testing

@testable import MailQueue

/// Runs a command, returning whether it exited with status 0.
func run(_ executable: String, _ arguments: [String]) -> Bool {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    do {
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus == 0
    } catch {
        return false
    }
}

/// Whether this process may mount a tmpfs (root in a container that allows it).
let tmpfsAvailable: Bool = {
    guard getuid() == 0 else { return false }
    let probe = "/tmp/tern-tmpfs-probe-\(getpid())"
    guard mkdir(probe, 0o700) == 0 else { return false }
    defer { rmdir(probe) }
    guard run("/bin/mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", probe]) else { return false }
    return run("/bin/umount", [probe])
}()

@Suite struct QueueDiskFullTests {
    /// SPEC §2.2: a full disk means a storage error (452 4.3.1), never a 250 followed by loss,
    /// and the queue works again once there is space.
    @Test(.enabled(if: tmpfsAvailable, "needs root and permission to mount a tmpfs"))
    func fullDiskFailsCleanlyAndRecovers() async throws {
        try await withQueueDirectory { directory in
            let mountPoint = (directory as NSString).deletingLastPathComponent + "/small"
            #expect(mkdir(mountPoint, 0o700) == 0)
            try #require(run("/bin/mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", mountPoint]))
            defer { _ = run("/bin/umount", [mountPoint]) }
            let queue = mountPoint + "/queue"
            let ballast = mountPoint + "/ballast"
            #expect(FileManager.default.createFile(atPath: ballast, contents: Data(count: 256 * 1024)))

            var store = try openStore(queue, QueueStore.Options(reserve: 64 * 1024))
            #expect(store.hasSpace(forMessageOfSize: 5000))
            var committed: [(QueueID, Int)] = []
            var failure: (any Error)?
            for seed in 0..<1000 {
                do {
                    committed.append((try await commit(store, messageBytes(5000, seed: seed)).id, seed))
                } catch {
                    failure = error
                    break
                }
            }
            let error = try #require(
                failure as? QueueError, "expected a storage error, got \(String(describing: failure))")
            #expect(error.isNoSpace, "\(error)")
            #expect(committed.count > 100)
            #expect(!store.hasSpace(forMessageOfSize: 5000))
            #expect(store.statistics.failedBatches >= 1)
            // Still full: fails again, without damaging anything.
            await #expect(throws: QueueError.self) { try await commit(store, messageBytes(5000)) }

            #expect(unlink(ballast) == 0)
            let after = try await commit(store, messageBytes(5000, seed: 4242))
            committed.append((after.id, 4242))
            store.close()

            store = try openStore(queue)
            defer { store.close() }
            #expect(store.messages().map(\.id) == committed.map(\.0))
            for (id, seed) in committed {
                #expect(try readAll(store, id) == messageBytes(5000, seed: seed))
            }
        }
    }
}
