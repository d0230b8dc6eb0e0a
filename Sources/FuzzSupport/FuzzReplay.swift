#if canImport(Glibc)
    import Glibc
#endif

/// What the fuzz targets share when built without libFuzzer: replaying the files named on the
/// command line (a corpus, or a crash input) through the target's input function.
public enum FuzzReplay {
    public static func run(_ paths: some Sequence<String>, _ fuzzOneInput: (UnsafePointer<UInt8>?, Int) -> Int32) {
        for path in paths {
            guard let file = fopen(path, "rb") else { continue }
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = fread(&chunk, 1, chunk.count, file)
                if count <= 0 { break }
                bytes += chunk[..<count]
            }
            fclose(file)
            _ = bytes.withUnsafeBufferPointer { fuzzOneInput($0.baseAddress, $0.count) }
        }
    }
}
