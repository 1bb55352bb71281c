"""Cluster.coordinator_call waits out a restarting coordinator for calls that may run twice."""
import pytest
import ray

from cluster import runtime


class Handle:
    def __getattr__(self, method):
        class Method:
            @staticmethod
            def remote(*args):
                return (method, args)
        return Method()


def cluster_with(monkeypatch, failures: int):
    calls = []

    def fake_get(ref, timeout=None):
        calls.append(ref[0])
        if len(calls) <= failures:
            raise ray.exceptions.ActorUnavailableError("The actor is restarting.", None)
        return "answer"
    monkeypatch.setattr(runtime.ray, "get", fake_get)
    c = object.__new__(runtime.Cluster)
    c.handle = Handle()
    c.restart_s = 5.0
    return c, calls


def test_an_idempotent_call_is_sent_again_while_the_coordinator_restarts(monkeypatch):
    c, calls = cluster_with(monkeypatch, failures=2)
    assert c.coordinator_call("ready") == "answer"
    assert calls == ["ready"] * 3


def test_a_rebalance_is_not_sent_again_behind_the_callers_back(monkeypatch):
    c, calls = cluster_with(monkeypatch, failures=1)
    with pytest.raises(ray.exceptions.ActorUnavailableError):
        c.coordinator_call("rebalance", 4)
    assert calls == ["rebalance"]


def test_the_wait_has_a_deadline(monkeypatch):
    c, calls = cluster_with(monkeypatch, failures=10**6)
    c.restart_s = 0.3
    with pytest.raises(ray.exceptions.ActorUnavailableError):
        c.coordinator_call("stats")
    assert 2 <= len(calls) < 10
