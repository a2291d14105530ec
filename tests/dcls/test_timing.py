"""dcls.timing: interleaved rounds, each timing ``calls`` consecutive calls."""

from dcls import timing


def test_rounds_interleave_the_runs_and_time_consecutive_calls(monkeypatch):
    clock, order = {"now": 0.0}, []
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock["now"])

    def run(name, cost):
        def step():
            order.append(name)
            clock["now"] += cost

        return step

    seconds = timing.time_interleaved({"a": run("a", 1.0), "b": run("b", 3.0)}, rounds=2, calls=2)
    assert seconds == {"a": [2.0, 2.0], "b": [6.0, 6.0]}
    assert order == ["a", "a", "b", "b", "a", "a", "b", "b"]
