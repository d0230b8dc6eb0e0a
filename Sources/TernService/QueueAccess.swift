import Foundation
import Logging
import MailPolicy
import MailQueue

/// How the command-line tools reach the queue: through the running server's control socket
/// when there is one, else by opening the queue themselves. The queue's lock makes the second
/// path fail cleanly rather than write beside a server that is running.
public enum QueueAccess {
    public static func perform(
        _ request: ControlSocket.Request, configuration: TernConfiguration
    ) async throws -> ControlSocket.Response {
        let dataDirectory = configuration.dataDirectory
        if let response = try ControlSocket.send(request, path: ControlSocket.path(dataDirectory: dataDirectory)) {
            return response
        }
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        var logger = Logger(label: "queue") { _ in SwiftLogNoOpLogHandler() }
        logger.logLevel = .critical
        let queue = try QueueStore.open(directory: "\(dataDirectory)/queue", logger: logger)
        defer { queue.close() }
        return await ControlSocket.handle(
            request, queue: queue, scheduler: nil,
            policy: RecipientPolicy(
                directory: ConfiguredDirectory(configuration, users: configuration.userDatabase(logger: logger))),
            hostname: configuration.hostname, maxMessageSize: configuration.limits.maxMessageSize)
    }
}
