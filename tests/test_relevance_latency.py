"""The side-calls timing of bench/relevance_latency.py: both ways run every query, in alternating order."""
from bench.relevance import BenchQuery
from bench.relevance_latency import side_calls


class Recorder:
    def __init__(self, name: str, log: list):
        self.name, self.log = name, log

    def search(self, request):
        assert request.retrieval == "hybrid" and request.offset == 0
        self.log.append((self.name, request.query))


def test_side_calls_times_both_ways_on_the_same_queries_in_turns():
    log: list = []
    queries = [BenchQuery(kind, f"q{i}", {"p": 3}) for i, kind in enumerate(["name", "name+typo", "attributes"])]
    out = side_calls({"one_call": Recorder("one_call", log), "call_per_side": Recorder("call_per_side", log)},
                     queries, 5)
    assert out["queries"] == 2 and set(out) >= {"one_call", "call_per_side", "one_call_over_call_per_side"}
    timed = log[len(log) // 2:]  # the untimed pass first, then the timed one
    assert [name for name, _ in timed] == ["one_call", "call_per_side", "call_per_side", "one_call"]
    assert {text for _, text in timed} == {"q0", "q2"}  # typo queries are left out
