import Foundation
import MailQueue

/// The queue tools of SPEC §1.5, as operations on an open queue. The running server performs
/// them for `tern queue …` through its control socket; with no server running the command
/// opens the queue itself (the queue's lock keeps the two from ever writing at once).
public enum QueueAdministration {
    /// One message as `tern queue list --json` prints it (SPEC §1.5 names every key).
    public struct Listing: Codable, Sendable, Equatable {
        public struct Recipient: Codable, Sendable, Equatable {
            public var address: String
            public var status: String
            public var attempts: Int
            public var next_attempt: String?
            public var last_error: String?
        }

        public var id: String
        public var sender: String
        public var size: Int
        public var arrival: String
        public var held: Bool
        public var recipients: [Recipient]
    }

    public static func list(_ queue: QueueStore) -> [Listing] {
        queue.messages().map(listing)
    }

    static func listing(_ message: QueuedMessage) -> Listing {
        Listing(
            id: "\(message.id)", sender: message.envelope.sender, size: message.size,
            arrival: timestamp(message.arrival), held: message.held,
            recipients: message.envelope.recipients.map { recipient in
                Listing.Recipient(
                    address: recipient.address, status: recipient.status.rawValue, attempts: recipient.attempts,
                    next_attempt: recipient.nextAttempt.map(timestamp), last_error: recipient.lastError)
            })
    }

    /// `tern queue list` without `--json`: one block per message, like `postqueue -p`.
    public static func format(_ listings: [Listing]) -> String {
        guard !listings.isEmpty else { return "Mail queue is empty\n" }
        var text = ""
        for message in listings {
            let sender = message.sender.isEmpty ? "<>" : message.sender
            text += "\(message.id)\(message.held ? "!" : " ") \(message.size) \(message.arrival) \(sender)\n"
            for recipient in message.recipients {
                var line = "    \(recipient.address) \(recipient.status) attempts=\(recipient.attempts)"
                if let next = recipient.next_attempt { line += " next=\(next)" }
                if let error = recipient.last_error { line += " error=\"\(error)\"" }
                text += line + "\n"
            }
        }
        text += "-- \(listings.count) message\(listings.count == 1 ? "" : "s")\n"
        return text
    }

    /// `tern queue show ID`: the envelope, then the header section of the message.
    public static func show(_ queue: QueueStore, id text: String) throws(AdministrationError) -> String {
        let id = try parse(text)
        guard let message = queue.message(id) else { throw .notFound(text) }
        let listing = listing(message)
        var output = "id: \(listing.id)\(listing.held ? " (held)" : "")\n"
        output += "arrival: \(listing.arrival)\nsize: \(listing.size)\n"
        output += "sender: <\(message.envelope.sender)>\n"
        if let client = message.envelope.clientAddress { output += "client: \(client)\n" }
        if let helo = message.envelope.heloName { output += "helo: \(helo)\n" }
        if let user = message.envelope.authenticatedUser { output += "authenticated: \(user)\n" }
        if message.envelope.requireTLS { output += "requiretls: yes (RFC 8689)\n" }
        for recipient in listing.recipients {
            output += "recipient: <\(recipient.address)> \(recipient.status) attempts=\(recipient.attempts)"
            if let next = recipient.next_attempt { output += " next=\(next)" }
            if let error = recipient.last_error { output += " error=\"\(error)\"" }
            output += "\n"
        }
        output += "\n"
        do {
            output += try headerSection(queue, id)
        } catch {
            throw .failed("reading \(text): \(error)")
        }
        return output
    }

    /// The message's header section (up to the empty line), at most 1 MiB of it.
    static func headerSection(_ queue: QueueStore, _ id: QueueID) throws -> String {
        let reader = try queue.readData(id)
        var collected: [UInt8] = []
        while collected.count < 1 << 20, let chunk = try reader.next(maxBytes: 64 * 1024) {
            collected += chunk.readableBytesView
            if let end = collected.firstRange(of: [13, 10, 13, 10]) {
                collected.removeSubrange(end.upperBound...)
                break
            }
        }
        return String(decoding: collected, as: UTF8.self).replacingOccurrences(of: "\r\n", with: "\n")
    }

    public static func delete(_ queue: QueueStore, ids: [String]) async throws(AdministrationError) -> Int {
        var removed = 0
        for text in ids {
            let id = try parse(text)
            guard queue.message(id) != nil else { throw .notFound(text) }
            do {
                try await queue.remove(id)
            } catch {
                throw .failed("deleting \(text): \(error)")
            }
            removed += 1
        }
        return removed
    }

    public static func deleteAll(_ queue: QueueStore) async throws(AdministrationError) -> Int {
        try await delete(queue, ids: queue.messages().map { "\($0.id)" })
    }

    public static func hold(_ queue: QueueStore, id text: String, held: Bool) async throws(AdministrationError) {
        let id = try parse(text)
        guard queue.message(id) != nil else { throw .notFound(text) }
        do {
            if held { try await queue.hold(id) } else { try await queue.release(id) }
        } catch {
            throw .failed("\(held ? "holding" : "releasing") \(text): \(error)")
        }
    }

    static func parse(_ text: String) throws(AdministrationError) -> QueueID {
        guard let id = QueueID(text) else { throw .badID(text) }
        return id
    }

    static func timestamp(_ date: Date) -> String {
        date.formatted(.iso8601)
    }
}

public enum AdministrationError: Error, Sendable, CustomStringConvertible, Equatable {
    case badID(String)
    case notFound(String)
    case failed(String)
    case unavailable(String)

    public var description: String {
        switch self {
        case .badID(let id): return "\(id): not a queue ID"
        case .notFound(let id): return "\(id): no such message in the queue"
        case .failed(let reason): return reason
        case .unavailable(let reason): return reason
        }
    }
}
