"""Loading weights: a missing, unreadable or wrong file is a clear error naming it."""
import pytest
import torch

from models.detector import load_detector
from models.evaluation_cli import load_attributes
from models.features import load_features
from models.text import TitleClassifier
from models.weights import read_weights
from shards.errors import InvalidInput

LOADERS = [TitleClassifier.load, load_attributes, load_features, load_detector]


@pytest.mark.parametrize("load", LOADERS)
def test_a_missing_garbled_or_foreign_weights_file_is_a_clear_error(tmp_path, load):
    with pytest.raises(InvalidInput, match="no .* weights at"):
        load(tmp_path / "missing.pt")
    (tmp_path / "photo.pt").write_bytes(b"\xff\xd8\xff\xe0 not a checkpoint")
    with pytest.raises(InvalidInput, match="is not a weights file"):
        load(tmp_path / "photo.pt")
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(InvalidInput, match="holds no .* weights"):
        load(tmp_path / "other.pt")


def test_read_weights_returns_what_was_saved(tmp_path):
    torch.save({"config": {"a": 1}, "state": {"w": torch.ones(3)}}, tmp_path / "w.pt")
    ck = read_weights(tmp_path / "w.pt", "test", ("config", "state"))
    assert ck["config"] == {"a": 1} and torch.equal(ck["state"]["w"], torch.ones(3))
