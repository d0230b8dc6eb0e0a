/// One thing wrong with a configuration file: the key it concerns (dotted, with array
/// indexes: `domains[1].aliases.sales`), the line where that key is written, and what is wrong.
public struct ConfigurationProblem: Sendable, Hashable, CustomStringConvertible {
    /// Dotted key path; empty for problems of the file as a whole (unreadable, not TOML).
    public var key: String
    /// 1-based line in the file; nil when the key is not written in it (a missing key of a
    /// section written nowhere) or there is no file.
    public var line: Int?
    public var message: String

    public init(key: String, line: Int?, message: String) {
        self.key = key
        self.line = line
        self.message = message
    }

    /// `line 12: limits.max_recipients: expected an integer`
    public var description: String {
        var text = ""
        if let line { text += "line \(line): " }
        if !key.isEmpty { text += "\(key): " }
        return text + message
    }
}

/// A configuration that cannot be used, with every problem found (not just the first).
public struct ConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    public var problems: [ConfigurationProblem]

    public init(problems: [ConfigurationProblem]) {
        self.problems = problems
    }

    public var description: String { problems.map(\.description).joined(separator: "\n") }
}
