extension Duration {
    /// Parses a configuration duration: one or more `<digits><unit>` pairs with the units
    /// `ms`, `s`, `m`, `h`, `d` — `"90s"`, `"5m"`, `"4h"`, `"5d"`, `"500ms"`, `"1h30m"`.
    /// Refuses a missing unit, a sign, spaces, fractions and anything beyond 100 years.
    public init?(configurationText text: String) {
        var total: Int64 = 0
        var rest = Substring(text)
        guard !rest.isEmpty else { return nil }
        while !rest.isEmpty {
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty, digits.count <= 12, let value = Int64(digits) else { return nil }
            rest = rest.dropFirst(digits.count)
            let unit = rest.prefix { $0.isASCII && $0.isLetter }
            rest = rest.dropFirst(unit.count)
            let milliseconds: Int64
            switch unit {
            case "ms": milliseconds = 1
            case "s": milliseconds = 1000
            case "m": milliseconds = 60_000
            case "h": milliseconds = 3_600_000
            case "d": milliseconds = 86_400_000
            default: return nil
            }
            let (product, overflow) = value.multipliedReportingOverflow(by: milliseconds)
            guard !overflow else { return nil }
            total += product
            guard total <= 100 * 365 * 86_400_000 else { return nil }
        }
        self = .milliseconds(total)
    }
}
