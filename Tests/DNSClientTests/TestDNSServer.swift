import NIOCore
import NIOPosix

// A DNS server for tests, self-contained in this one file so that other test targets can copy
// it: it needs only DNSClient (for the message codec), NIOCore and NIOPosix.
@testable import DNSClient

/// A recursive-looking DNS server on 127.0.0.1 that answers from a table, over UDP and TCP on
/// the same port. It follows CNAME chains in its table as a recursive resolver would, answers
/// NXDOMAIN for names it has no record of, and NOERROR/no records for a known name and
/// another type. `Behaviour` makes it misbehave on purpose.
///
/// All state lives on the server's one event loop; the async methods hop there.
final class TestDNSServer: Sendable {
    enum Mode: Sendable {
        /// Answer from the table.
        case answer
        /// Read queries, never reply.
        case silent
        /// Reply SERVFAIL to everything.
        case serverFailure
        /// Reply NXDOMAIN to everything.
        case nameError
        /// Reply REFUSED to everything.
        case refused
    }

    struct Behaviour: Sendable {
        var mode: Mode = .answer
        /// UDP replies carry TC and no records, so the client must retry over TCP.
        var truncateUDP = false
        /// Set the AD bit on replies.
        var authenticated = false
        /// Before the real UDP reply, send a decoy NXDOMAIN with a wrong ID.
        var wrongIDFirst = false
        /// Before the real UDP reply, send a decoy NXDOMAIN with the right ID from another port.
        var spoofFirst = false
        /// Before the real UDP reply, send a datagram that is not a DNS message.
        var garbageFirst = false

        init(
            mode: Mode = .answer, truncateUDP: Bool = false, authenticated: Bool = false,
            wrongIDFirst: Bool = false, spoofFirst: Bool = false, garbageFirst: Bool = false
        ) {
            self.mode = mode
            self.truncateUDP = truncateUDP
            self.authenticated = authenticated
            self.wrongIDFirst = wrongIDFirst
            self.spoofFirst = spoofFirst
            self.garbageFirst = garbageFirst
        }
    }

    enum Transport: Sendable, Hashable { case udp, tcp }

    struct ReceivedQuery: Sendable, Hashable {
        var transport: Transport
        var question: DNSQuestion?
    }

    private struct State {
        var records: [DNSResourceRecord]
        var behaviour: Behaviour
        var received: [ReceivedQuery] = []
    }

    let host: String
    let port: Int
    private let loop: any EventLoop
    private let state: NIOLoopBoundBox<State>
    private let udp: any Channel
    private let tcp: any Channel
    private let decoy: any Channel

    /// `127.0.0.1:port` or `[::1]:port`, as `StubResolver(servers:)` takes it.
    var serverString: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    var address: SocketAddress { try! SocketAddress(ipAddress: host, port: port) }

    private init(
        host: String, port: Int, loop: any EventLoop, state: NIOLoopBoundBox<State>, udp: any Channel,
        tcp: any Channel, decoy: any Channel
    ) {
        self.host = host
        self.port = port
        self.loop = loop
        self.state = state
        self.udp = udp
        self.tcp = tcp
        self.decoy = decoy
    }

    /// Starts a server on `host` (a loopback address) and a free port, the same for UDP and TCP.
    static func start(
        host: String = "127.0.0.1", records: [DNSResourceRecord] = [], behaviour: Behaviour = Behaviour(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> TestDNSServer {
        let loop = group.next()
        let state = NIOLoopBoundBox.makeBoxSendingValue(
            State(records: records, behaviour: behaviour), as: State.self, eventLoop: loop)
        let server = ServerReference()
        let decoy = try await DatagramBootstrap(group: loop).bind(host: host, port: 0).get()
        // Port 0 picks a free UDP port; TCP must get the same number, which can be taken.
        for _ in 0..<20 {
            let udp = try await DatagramBootstrap(group: loop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(UDPHandler(server: server))
                    }
                }
                .bind(host: host, port: 0).get()
            let port = udp.localAddress!.port!
            do {
                let tcp = try await ServerBootstrap(group: loop)
                    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                    .childChannelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(
                                ByteToMessageHandler(LengthPrefixedMessageDecoder()))
                            try channel.pipeline.syncOperations.addHandler(TCPHandler(server: server))
                        }
                    }
                    .bind(host: host, port: port).get()
                let result = TestDNSServer(
                    host: host, port: port, loop: loop, state: state, udp: udp, tcp: tcp, decoy: decoy)
                try await loop.submit { server.server = result }.get()
                return result
            } catch {
                try? await udp.close()
            }
        }
        try? await decoy.close()
        throw ChannelError.inputClosed
    }

    func stop() async {
        try? await udp.close()
        try? await tcp.close()
        try? await decoy.close()
    }

    func setBehaviour(_ behaviour: Behaviour) async {
        try? await loop.submit { self.state.value.behaviour = behaviour }.get()
    }

    func add(_ records: [DNSResourceRecord]) async {
        try? await loop.submit { self.state.value.records += records }.get()
    }

    /// Every query received so far, in order.
    func received() async -> [ReceivedQuery] {
        (try? await loop.submit { self.state.value.received }.get()) ?? []
    }

    // MARK: Answering (on the loop)

    /// The datagrams or frames to send for one query; the real reply is last.
    fileprivate func replies(to bytes: ByteBuffer, transport: Transport) -> [Outgoing] {
        let query = try? DNSMessage.parse(bytes)
        state.value.received.append(ReceivedQuery(transport: transport, question: query?.questions.first))
        guard let query, let question = query.questions.first else { return [] }
        let behaviour = state.value.behaviour

        var reply = DNSMessage(
            header: DNSHeader(
                id: query.header.id, isResponse: true, opcode: query.header.opcode,
                recursionDesired: query.header.recursionDesired, recursionAvailable: true,
                authenticData: behaviour.authenticated,
                checkingDisabled: query.header.checkingDisabled),
            questions: query.questions,
            opt: query.opt.map { OPTRecord(udpPayloadSize: 1232, dnssecOK: $0.dnssecOK) })
        switch behaviour.mode {
        case .silent: return []
        case .serverFailure: reply.header.rcode = 2
        case .nameError: reply.header.rcode = 3
        case .refused: reply.header.rcode = 5
        case .answer: answer(question, into: &reply)
        }
        if transport == .udp, behaviour.truncateUDP {
            reply.header.isTruncated = true
            reply.answers = []
            reply.authority = []
        }

        var outgoing: [Outgoing] = []
        var decoyReply = reply
        decoyReply.header.rcode = 3
        decoyReply.answers = []
        if transport == .udp, behaviour.garbageFirst {
            outgoing.append(.fromServer(ByteBuffer(bytes: [0xDE, 0xAD, 0xBE, 0xEF])))
        }
        if transport == .udp, behaviour.wrongIDFirst {
            var wrong = decoyReply
            wrong.header.id &+= 1
            outgoing.append(.fromServer(wrong.encoded()))
        }
        if transport == .udp, behaviour.spoofFirst {
            outgoing.append(.fromDecoy(decoyReply.encoded()))
        }
        outgoing.append(.fromServer(reply.encoded()))
        return outgoing
    }

    private func answer(_ question: DNSQuestion, into reply: inout DNSMessage) {
        let records = state.value.records
        var owner = question.name
        for _ in 0..<16 {
            let matching = records.filter { $0.name == owner && $0.type == question.type }
            if !matching.isEmpty {
                reply.answers += matching
                return
            }
            guard question.type != .cname,
                let alias = records.first(where: { $0.name == owner && $0.type == .cname }),
                case .cname(let target) = alias.data
            else { break }
            reply.answers.append(alias)
            owner = target
        }
        // RFC 2308: a negative answer carries the zone's SOA for its TTL.
        let zone = DNSName(validatedOrRoot: owner.labels.suffix(2))
        reply.authority = [
            DNSResourceRecord(
                name: zone, ttl: 300,
                data: .soa(
                    SOARecord(
                        primaryServer: "ns.test", responsibleMailbox: "hostmaster.test",
                        serial: 1, refresh: 3600, retry: 600, expire: 86400, minimum: 300)))
        ]
        if !records.contains(where: { $0.name == owner }) { reply.header.rcode = 3 }
    }

    fileprivate func send(_ outgoing: [Outgoing], to client: SocketAddress) {
        for item in outgoing {
            switch item {
            case .fromServer(let bytes):
                udp.writeAndFlush(AddressedEnvelope(remoteAddress: client, data: bytes), promise: nil)
            case .fromDecoy(let bytes):
                decoy.writeAndFlush(AddressedEnvelope(remoteAddress: client, data: bytes), promise: nil)
            }
        }
    }

    fileprivate enum Outgoing {
        case fromServer(ByteBuffer)
        case fromDecoy(ByteBuffer)
    }
}

extension DNSName {
    fileprivate init(validatedOrRoot labels: ArraySlice<[UInt8]>) {
        self = (try? DNSName(labels: Array(labels))) ?? .root
    }
}

/// Lets the channel handlers, created before the server object exists, reach it. Written once
/// on the loop before any channel can deliver a read, read only on the loop.
private final class ServerReference: @unchecked Sendable {
    var server: TestDNSServer?
}

private final class UDPHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let server: ServerReference
    init(server: ServerReference) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard let server = server.server else { return }
        server.send(server.replies(to: envelope.data, transport: .udp), to: envelope.remoteAddress)
    }
}

private final class TCPHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let server: ServerReference
    init(server: ServerReference) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let server = server.server else { return }
        guard case .fromServer(var reply) = server.replies(to: unwrapInboundIn(data), transport: .tcp).last
        else { return }
        var framed = ByteBuffer()
        framed.writeInteger(UInt16(reply.readableBytes))
        framed.writeBuffer(&reply)
        context.writeAndFlush(wrapOutboundOut(framed), promise: nil)
    }
}
