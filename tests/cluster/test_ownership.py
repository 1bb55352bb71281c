"""The storage root's heartbeat record (cluster/ownership.py), on real files, without Ray."""
import json
import socket
import time

import pytest

from cluster.ownership import OWNER, STALE_S, Heartbeat, check_free, gone_from_here, read_owner
from shards.errors import InvalidInput


def test_a_fresh_heartbeat_of_another_cluster_refuses_and_a_stale_one_does_not(tmp_path):
    check_free(tmp_path, "10.0.0.1:6379")                      # no record: free
    (tmp_path / OWNER).write_text(json.dumps({"ray": "10.0.0.2:6379", "host": "b", "time": 1000.0}))
    check_free(tmp_path, "10.0.0.2:6379", now=1001.0)          # our own record
    with pytest.raises(InvalidInput, match="pass --address 10.0.0.2:6379"):
        check_free(tmp_path, "10.0.0.1:6379", now=1000.0 + STALE_S - 0.5)
    check_free(tmp_path, "10.0.0.1:6379", now=1000.0 + STALE_S + 0.5)


def test_a_fresh_heartbeat_of_a_ray_that_stopped_on_this_machine_frees_the_root_at_once(tmp_path):
    """A crashed or killed local cluster: nothing listens at its GCS port any more."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        alive = f"127.0.0.1:{listening.getsockname()[1]}"
        (tmp_path / OWNER).write_text(json.dumps({"ray": alive, "host": "here", "time": time.time()}))
        with pytest.raises(InvalidInput, match=f"pass --address {alive}"):
            check_free(tmp_path, "127.0.0.1:1")
    assert gone_from_here(alive)           # the same port, closed now: refused
    check_free(tmp_path, "127.0.0.1:1")
    # an address of another machine is never probed: a refusal there may be a firewall's
    assert not gone_from_here("198.51.100.7:6379") and not gone_from_here("not-an-address")


def test_a_live_cluster_whose_clock_runs_behind_is_not_taken_for_a_dead_one(tmp_path, monkeypatch):
    """Its heartbeat's times look stale, but the record keeps changing: refused."""
    import cluster.ownership as ownership

    class SlowClock:   # the heartbeat's machine: its clock a minute behind
        def __getattr__(self, name):
            return getattr(time, name)

        @staticmethod
        def time():
            return time.time() - 60
    monkeypatch.setattr(ownership, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(ownership, "CONFIRM_S", 1.0)   # many beats: a busy machine still makes one
    monkeypatch.setattr(ownership, "time", SlowClock())
    hb = Heartbeat(tmp_path, "10.0.0.1:6379")
    try:
        with pytest.raises(InvalidInput, match="pass --address 10.0.0.1:6379"):
            check_free(tmp_path, "10.0.0.9:6379", now=time.time())
    finally:
        hb._stop.set()
        hb._thread.join()
    check_free(tmp_path, "10.0.0.9:6379", now=time.time())    # it stopped beating: the old record is free


@pytest.mark.parametrize("text", ["", "{not json", "[1, 2]", '{"time": 5}', '{"ray": 7, "time": 5}',
                                  '{"ray": "10.0.0.2:6379"}', '{"ray": "10.0.0.2:6379", "time": "soon"}',
                                  '{"ray": "10.0.0.2:6379", "time": true}'])
def test_an_unreadable_record_counts_as_none(tmp_path, text):
    (tmp_path / OWNER).write_text(text)
    assert read_owner(tmp_path) is None
    check_free(tmp_path, "10.0.0.1:6379")


def test_the_heartbeat_beats_and_its_release_frees_the_root_only_if_it_is_still_ours(tmp_path, monkeypatch):
    monkeypatch.setattr("cluster.ownership.HEARTBEAT_S", 0.05)
    hb = Heartbeat(tmp_path, "10.0.0.1:6379")
    first = read_owner(tmp_path)["time"]
    time.sleep(0.3)
    assert read_owner(tmp_path)["time"] > first and read_owner(tmp_path)["ray"] == "10.0.0.1:6379"
    with pytest.raises(InvalidInput):
        check_free(tmp_path, "10.0.0.9:6379")
    hb.release()
    assert not (tmp_path / OWNER).exists()
    check_free(tmp_path, "10.0.0.9:6379")
    # a record another cluster wrote since is left alone
    hb2 = Heartbeat(tmp_path, "10.0.0.1:6379")
    hb2._stop.set()
    hb2._thread.join()
    (tmp_path / OWNER).write_text(json.dumps({"ray": "10.0.0.9:6379", "time": time.time()}))
    hb2.release()
    assert read_owner(tmp_path)["ray"] == "10.0.0.9:6379"
    assert [p.name for p in tmp_path.iterdir()] == [OWNER]   # no temporary files left behind


def test_a_refused_connection_says_what_to_set_for_token_authentication():
    from cluster.runtime import _why
    # the chain ray.init raises when the cluster's token auth refuses the caller (seen with Ray 2.60)
    try:
        try:
            raise RuntimeError("Failed to connect to GCS. Last connection error: ray.exceptions.AuthenticationError: "
                               "RPC error: InvalidAuthToken: Authentication token is missing or incorrect.")
        except RuntimeError as inner:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from inner
    except ConnectionError as exc:
        assert "put the cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN" in _why(exc)
    assert _why(ConnectionError("Failed to connect\nGCS at 10.0.0.1:1 timed out")) == "GCS at 10.0.0.1:1 timed out"
