"""What the REST daemon counts per search (cluster/metrics.py); the export through Ray's metrics
agent is checked against the live daemon in test_rest.py."""
from cluster.metrics import observations, option


def answer(**changes):
    base = {"category_source": "auto", "roi_source": "detector", "partial": False, "candidates": 120,
            "relaxed": [], "hedged": None, "results": [{"id": 1}],
            "timings_ms": {"roi": 30.0, "attributes": 40.0, "features": 20.0, "analysis": 70.0, "search": 3.0,
                           "total": 73.0}}
    return {**base, **changes}


def test_the_query_option_is_the_papers():
    assert option(answer()) == "1"
    assert option(answer(category_source="user")) == "2"
    assert option(answer(roi_source="user")) == "3"
    assert option(answer(roi_source="user", category_source="user")) == "3"   # the box decides the ROI


def test_a_plain_answer_counts_one_query_its_scan_and_each_stage():
    obs = observations(answer())
    assert obs[:2] == [("queries", 1, {"option": "1", "partial": "false"}), ("scanned", 120, {"option": "1"})]
    assert [(n, v, t["stage"]) for n, v, t in obs[2:]] == [
        ("stage_ms", 30.0, "roi"), ("stage_ms", 40.0, "attributes"), ("stage_ms", 20.0, "features"),
        ("stage_ms", 70.0, "analysis"), ("stage_ms", 3.0, "search"), ("stage_ms", 73.0, "total")]


def test_partial_relaxed_hedged_and_empty_answers_are_told_apart():
    obs = observations(answer(partial=True, relaxed=["baseColour=Red"], hedged="Shirts", results=[],
                              category_source="user"))
    names = {(n, tuple(sorted(t.items()))) for n, _, t in obs if n != "stage_ms"}
    assert names == {("queries", (("option", "2"), ("partial", "true"))), ("scanned", (("option", "2"),)),
                     ("relaxed", (("option", "2"),)), ("hedged", (("option", "2"),)),
                     ("no_hits", (("option", "2"),))}
