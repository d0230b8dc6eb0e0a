import Foundation
import Logging
import MailDelivery
import MailPolicy
import MailQueue
import NIOCore
import NIOPosix

/// The local control channel between `tern queue …` / `tern sendmail` and a running server: a
/// Unix socket at `<data_dir>/control.sock` (mode 0600), one JSON request line in, one JSON
/// response line out. It makes the queue tools "work while the server runs, and agree with
/// what it does" (SPEC §1.5) without a second process ever writing the queue.
public enum ControlSocket {
    public struct Request: Codable, Sendable {
        public enum Operation: String, Codable, Sendable {
            case list, show, delete, deleteAll, flush, hold, release, submit
        }

        public var op: Operation
        public var ids: [String]?
        public var submission: LocalSubmission?

        public init(op: Operation, ids: [String]? = nil, submission: LocalSubmission? = nil) {
            self.op = op
            self.ids = ids
            self.submission = submission
        }
    }

    public struct Response: Codable, Sendable {
        public var ok: Bool
        public var error: String?
        /// sysexits(3) code for the command to exit with on failure.
        public var exitCode: Int32?
        public var output: String?
        public var listings: [QueueAdministration.Listing]?
        public var count: Int?
        public var id: String?

        public init(
            ok: Bool, error: String? = nil, exitCode: Int32? = nil, output: String? = nil,
            listings: [QueueAdministration.Listing]? = nil, count: Int? = nil, id: String? = nil
        ) {
            self.ok = ok
            self.error = error
            self.exitCode = exitCode
            self.output = output
            self.listings = listings
            self.count = count
            self.id = id
        }

        static func failure(_ error: any Error, code: Int32 = 1) -> Response {
            Response(ok: false, error: "\(error)", exitCode: code)
        }
    }

    /// Largest request accepted: a submitted message plus its base64 overhead.
    static let maxRequestSize = 64 << 20

    public static func path(dataDirectory: String) -> String {
        "\(dataDirectory)/control.sock"
    }

    /// Carries out one request against the live (or an offline-opened) queue.
    public static func handle(
        _ request: Request, queue: QueueStore, scheduler: DeliveryScheduler?, policy: RecipientPolicy,
        hostname: String, maxMessageSize: Int
    ) async -> Response {
        do {
            switch request.op {
            case .list:
                return Response(ok: true, listings: QueueAdministration.list(queue))
            case .show:
                return Response(ok: true, output: try QueueAdministration.show(queue, id: request.ids?.first ?? ""))
            case .delete:
                return Response(ok: true, count: try await QueueAdministration.delete(queue, ids: request.ids ?? []))
            case .deleteAll:
                return Response(ok: true, count: try await QueueAdministration.deleteAll(queue))
            case .hold, .release:
                for id in request.ids ?? [] {
                    try await QueueAdministration.hold(queue, id: id, held: request.op == .hold)
                }
                if request.op == .release { scheduler?.scanNow() }
                return Response(ok: true, count: request.ids?.count ?? 0)
            case .flush:
                try await QueueAdministration.flush(queue, ids: request.ids ?? [])
                scheduler?.scanNow()
                return Response(ok: true)
            case .submit:
                guard let submission = request.submission else {
                    return Response(ok: false, error: "submit without a message", exitCode: 64)
                }
                do {
                    let queued = try await submission.submit(
                        to: queue, policy: policy, hostname: hostname, maxMessageSize: maxMessageSize)
                    scheduler?.submit(queued.id)
                    return Response(ok: true, id: "\(queued.id)")
                } catch {
                    return Response.failure(error, code: error.exitCode)
                }
            }
        } catch {
            return Response.failure(error, code: error == .unavailable("") ? 69 : 1)
        }
    }

    // MARK: Server

    /// Serves the socket until cancelled.
    static func serve(
        path: String, queue: QueueStore, scheduler: DeliveryScheduler, policy: RecipientPolicy, hostname: String,
        maxMessageSize: Int, logger: Logger
    ) async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        chmod(path, 0o600)
        try await withTaskCancellationHandler {
            try await server.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in inbound {
                        group.addTask {
                            try? await connection.executeThenClose { input, output in
                                var request = ByteBuffer()
                                for try await chunk in input {
                                    var chunk = chunk
                                    request.writeBuffer(&chunk)
                                    if request.readableBytesView.contains(10) { break }
                                    if request.readableBytes > maxRequestSize { return }
                                }
                                let response: Response
                                do {
                                    let decoded = try JSONDecoder().decode(
                                        Request.self, from: Data(request.readableBytesView))
                                    response = await handle(
                                        decoded, queue: queue, scheduler: scheduler, policy: policy, hostname: hostname,
                                        maxMessageSize: maxMessageSize)
                                } catch {
                                    response = Response(ok: false, error: "bad request: \(error)", exitCode: 64)
                                }
                                var bytes = ByteBuffer(bytes: try JSONEncoder().encode(response))
                                bytes.writeStaticString("\n")
                                try await output.write(bytes)
                            }
                        }
                    }
                }
            }
        } onCancel: {
            server.channel.close(promise: nil)
        }
        unlink(path)
    }

    // MARK: Client

    /// Sends a request to the server listening at `path`; nil when no server listens there.
    public static func send(_ request: Request, path: String) throws -> Response? {
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
            raw[pathBytes.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else { return nil }
        var payload = try JSONEncoder().encode(request)
        payload.append(10)
        try payload.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    throw AdministrationError.unavailable("writing to \(path): \(String(cString: strerror(errno)))")
                }
                offset += written
            }
        }
        var response = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = read(descriptor, &buffer, buffer.count)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            response.append(contentsOf: buffer[0..<count])
        }
        guard !response.isEmpty else {
            throw AdministrationError.unavailable("the server at \(path) closed the connection without answering")
        }
        return try JSONDecoder().decode(Response.self, from: response)
    }
}

extension QueueAdministration {
    /// `tern queue flush [ID]`: make deferred recipients due now.
    public static func flush(_ queue: QueueStore, ids: [String]) async throws(AdministrationError) {
        let targets: [QueuedMessage]
        if ids.isEmpty {
            targets = queue.messages()
        } else {
            var found: [QueuedMessage] = []
            for text in ids {
                let id = try parse(text)
                guard let message = queue.message(id) else { throw .notFound(text) }
                found.append(message)
            }
            targets = found
        }
        for message in targets {
            for (index, recipient) in message.envelope.recipients.enumerated() where recipient.status == .deferred {
                do {
                    try await queue.update(
                        message.id, recipient: index, status: .deferred, attempts: recipient.attempts,
                        nextAttempt: Date(),
                        lastError: recipient.lastError)
                } catch {
                    throw .failed("flushing \(message.id): \(error)")
                }
            }
        }
    }
}
