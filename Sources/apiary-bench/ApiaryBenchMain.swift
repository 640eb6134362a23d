import ApiaryBench

/// `apiary-bench`: the benchmark suite and its child helpers (docs/BENCHMARKS.md).
@main
enum ApiaryBenchMain {
    static func main() async {
        await BenchTool.main()
    }
}
