import ApiaryCore
import Testing

@Suite("ChangeSignal: waiting for a change without polling")
struct ChangeSignalTests {
    @Test("a wait returns when a change is announced")
    func wakesOnNotify() async {
        let signal = ChangeSignal()
        let g = signal.generation
        async let waited: Void = signal.wait(after: g)
        // Whether the waiter has suspended yet or not, one announcement after `g` ends it.
        signal.notify()
        await waited
        #expect(signal.generation > g)
    }

    @Test("a change announced between reading the generation and waiting is not lost")
    func noLostWakeUp() async {
        let signal = ChangeSignal()
        let g = signal.generation
        signal.notify()
        await signal.wait(after: g)  // returns at once; would hang if the change were lost
        #expect(signal.generation == g + 1)
    }

    @Test("a wait with a deadline returns when the deadline passes, with no change")
    func deadline() async {
        let signal = ChangeSignal()
        let g = signal.generation
        let start = ContinuousClock.now
        await signal.wait(after: g, until: start + .milliseconds(50))
        #expect(ContinuousClock.now - start >= .milliseconds(50))
        #expect(signal.generation == g)
    }

    @Test("a cancelled task's wait returns")
    func cancellation() async {
        let signal = ChangeSignal()
        let task = Task { await signal.wait(after: signal.generation) }
        task.cancel()
        await task.value
        #expect(signal.generation == 0)
    }

    @Test("every waiter returns on one announcement")
    func manyWaiters() async {
        let signal = ChangeSignal()
        let g = signal.generation
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<20 { group.addTask { await signal.wait(after: g) } }
            signal.notify()
            await group.waitForAll()
        }
        #expect(signal.generation == g + 1)
    }
}
