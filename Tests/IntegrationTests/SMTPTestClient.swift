import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A deliberately plain SMTP client for tests: blocking socket, raw bytes out, whole replies
/// in. It can connect from any loopback source address (127.0.0.9 plays an outside client).
final class SMTPTestClient {
    private let descriptor: Int32
    private var input: [UInt8] = []

    init(port: Int, from source: String? = nil, host: String = "127.0.0.1", timeout: Int = 15) throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw TestServerError("socket: \(errno)") }
        var time = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = inet_addr(source)
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard bound == 0 else {
                Glibc.close(descriptor)
                throw TestServerError("bind \(source): \(errno)")
            }
        }
        var remote = sockaddr_in()
        remote.sin_family = sa_family_t(AF_INET)
        remote.sin_addr.s_addr = inet_addr(host)
        remote.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &remote) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else {
            Glibc.close(descriptor)
            throw TestServerError("connect: \(errno)")
        }
    }

    func close() {
        Glibc.close(descriptor)
    }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes {
                Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            guard written > 0 else { throw TestServerError("send: \(errno)") }
            offset += written
        }
    }

    func send(_ text: String) throws {
        try send(Array(text.utf8))
    }

    /// Sends `line` and CRLF.
    func command(_ line: String) throws -> String {
        try send(line + "\r\n")
        return try reply()
    }

    /// The next complete reply, all its lines joined with CRLF (no final CRLF); nil when the
    /// server closed the connection first.
    func replyOrClose() throws -> String? {
        var lines: [String] = []
        while true {
            guard let line = try readLine() else {
                if lines.isEmpty { return nil }
                throw TestServerError("connection closed inside a reply: \(lines)")
            }
            lines.append(line)
            // `250-text` continues, `250 text` (or a bare `250`) ends the reply.
            let bytes = Array(line.utf8)
            if bytes.count < 4 || bytes[3] != UInt8(ascii: "-") { return lines.joined(separator: "\r\n") }
        }
    }

    func reply() throws -> String {
        guard let reply = try replyOrClose() else { throw TestServerError("connection closed, reply expected") }
        return reply
    }

    /// True when the server has closed the connection and sent nothing more.
    func isClosed() throws -> Bool {
        try readLine() == nil && input.isEmpty
    }

    private func readLine() throws -> String? {
        while true {
            if let end = input.firstRange(of: [13, 10]) {
                let line = String(decoding: input[..<end.lowerBound], as: UTF8.self)
                input.removeSubrange(..<end.upperBound)
                return line
            }
            var buffer = [UInt8](repeating: 0, count: 65536)
            let count = recv(descriptor, &buffer, buffer.count, 0)
            if count == 0 { return nil }
            if count < 0 {
                if errno == EINTR { continue }
                if errno == ECONNRESET { return nil }
                throw TestServerError(
                    "recv: \(errno == EAGAIN ? "timed out" : String(errno)); have \(String(decoding: input, as: UTF8.self))"
                )
            }
            input += buffer[0..<count]
        }
    }
}
