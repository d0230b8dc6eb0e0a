extension Duration {
    /// The inverse of the configuration's duration parser (`Duration(configurationText:)` in
    /// TernService), here so that delivery can quote `max_queue_time` in a bounce as it was
    /// configured.
    ///
    /// Configuration text in units from days down to milliseconds: `"5m"`, `"1h30m"`, `"1m30s"`.
    public var configurationText: String {
        let (seconds, attoseconds) = components
        var milliseconds = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        guard milliseconds > 0 else { return "0s" }
        var text = ""
        for (unit, size) in [("d", Int64(86_400_000)), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)]
        where milliseconds >= size {
            text += "\(milliseconds / size)\(unit)"
            milliseconds %= size
        }
        return text
    }
}
