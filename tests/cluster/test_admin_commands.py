"""Admin commands on a storage root: a mistyped root or shard count is a clear error, and nothing starts."""
import pytest
import ray

from cluster.cli import main
from coordinator.placement import Placement, check_shard_count
from shards.errors import InvalidInput


@pytest.mark.parametrize("argv", [["stats"], ["rebalance", "--shards", "3"]])
def test_an_admin_command_on_a_root_without_a_cluster_creates_none(tmp_path, capsys, argv):
    root = tmp_path / "typo"
    assert main(argv + ["--storage", str(root)]) == 2
    assert "no cluster at" in capsys.readouterr().err
    assert not root.exists() and not ray.is_initialized()


@pytest.mark.parametrize("n", ["0", "-2", "4097"])
def test_a_bad_shard_count_is_refused_before_ray_starts(tmp_path, capsys, n):
    Placement.initial(2).save(tmp_path)
    before = (tmp_path / "placement.json").read_text()
    assert main(["rebalance", "--shards", n, "--storage", str(tmp_path)]) == 2
    assert "number of shards must be in [1, 4096]" in capsys.readouterr().err
    assert (tmp_path / "placement.json").read_text() == before and not ray.is_initialized()
    storage = tmp_path / "new"
    assert main(["index", "--catalog", str(tmp_path / "c.csv"), "--shards", n, "--storage", str(storage)]) == 2
    assert not storage.exists()


@pytest.mark.parametrize("n", [0, -1, 17, 2.0, True, "3"])
def test_check_shard_count(n):
    with pytest.raises(InvalidInput):
        check_shard_count(n, 16)
    check_shard_count(16, 16)
