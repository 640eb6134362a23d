extension Duration {
    /// A number of seconds as a config file or an environment variable gives it
    /// (`publish.interval_s: 0.02`), to the millisecond: `.milliseconds(round(seconds * 1000))`,
    /// so that 0.02 is exactly 20 ms (`.seconds(0.02)` is not).
    public init(configSeconds seconds: Double) {
        self = .milliseconds(Int64((seconds * 1000).rounded()))
    }
}
