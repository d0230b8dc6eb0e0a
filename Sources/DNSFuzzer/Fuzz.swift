import DNSClient
import FuzzSupport
import NIOCore

// libFuzzer target for the DNS message parser (see docs/testing.md and shared/FUZZING.md).
//
// Every input is a reply off the wire. The parser must never trap, and whatever it accepts must
// survive a round trip: encoding the parsed message and parsing that again gives the same
// message. The typed lookups' answer extraction (CNAME chains, negative TTLs) runs on every
// accepted message too, for every type of question.
#if canImport(Glibc)
    import Glibc
#endif

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data, size > 0 else { return 0 }
    let bytes = ByteBuffer(bytes: UnsafeBufferPointer(start: data, count: size))
    guard let message = try? DNSMessage.parse(bytes) else { return 0 }
    let again: DNSMessage
    do {
        again = try DNSMessage.parse(message.encoded())
    } catch {
        preconditionFailure("an accepted message does not parse after encoding: \(error)")
    }
    precondition(again == message, "round trip changed the message")
    if let question = message.questions.first {
        _ = try? StubResolver.answer(from: message, name: question.name, type: question.type)
    }
    for type: DNSRecordType in [.a, .aaaa, .mx, .txt, .ptr, .cname, .tlsa] {
        _ = try? StubResolver.answer(from: message, name: message.answers.first?.name ?? .root, type: type)
    }
    _ = DNSCache.negativeTTL(of: message)
    return 0
}

#if FUZZING
    // libFuzzer's driver is the program's entry point (the fuzz build passes -DFUZZING).
    @_cdecl("DNSFuzzer_main")
    public func fuzzerMain(
        _ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
    ) -> Int32 {
        var argc = argc
        var argv = argv
        return LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput)
    }
#else
    /// Without libFuzzer: replays the files named on the command line (a corpus or a crash input).
    @main
    struct DNSFuzzerReplay {
        static func main() {
            FuzzReplay.run(CommandLine.arguments.dropFirst(), fuzzOneInput)
        }
    }
#endif
