"""A storage root remembers which feature model made its codes (cluster/model_record.py):
commands that code photos with another one are refused before they write or answer."""
import json

import pytest
import ray

from cluster.cli import main
from cluster.model_record import RECORD, check_models, features_digest, recorded_model
from coordinator.placement import Placement
from shards.errors import InvalidInput


def assets(folder, content: bytes):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "features.pt").write_bytes(content)
    return folder


def test_the_first_model_is_recorded_and_another_one_refused(tmp_path):
    a, b = assets(tmp_path / "a", b"model a"), assets(tmp_path / "b", b"model b")
    root = tmp_path / "root"
    assert check_models(root, a) == features_digest(a)
    assert not root.exists()                              # a root not made yet is left alone
    root.mkdir()
    check_models(root, a)
    record = (root / RECORD).read_text()
    assert json.loads(record)["features"] == features_digest(a) == recorded_model(root)
    check_models(root, assets(tmp_path / "a2", b"model a"))   # the same model in another folder
    with pytest.raises(InvalidInput, match=f"coded with the feature model {features_digest(a)}.*"
                                           f"have {features_digest(b)}"):
        check_models(root, b)
    assert (root / RECORD).read_text() == record          # refused: nothing changed
    (root / RECORD).write_text("{broken")
    with pytest.raises(InvalidInput, match="unreadable"):
        check_models(root, a)
    with pytest.raises(InvalidInput, match="cannot read the feature model"):
        check_models(tmp_path / "root", tmp_path / "nowhere")


def test_index_with_other_models_is_refused_before_ray_starts(tmp_path, capsys, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    Placement.initial(2).save(root)
    (root / RECORD).write_text(json.dumps({"features": "0123456789abcdef", "file": "/elsewhere/features.pt"}))
    catalog = tmp_path / "catalog"
    (catalog / "images").mkdir(parents=True)
    (catalog / "styles.csv").write_text("id,gender,masterCategory,subCategory,articleType,baseColour,season,year,"
                                        "usage,productDisplayName\n1,Men,Apparel,Topwear,Shirts,Blue,Fall,2012,"
                                        "Casual,Blue Shirt\n")
    (catalog / "images" / "1.jpg").write_bytes(b"x")
    before = sorted(p.name for p in root.iterdir())
    assert main(["index", "--catalog", str(catalog), "--storage", str(root)]) == 2
    err = capsys.readouterr().err
    assert "coded with the feature model 0123456789abcdef (/elsewhere/features.pt)" in err
    assert sorted(p.name for p in root.iterdir()) == before and not ray.is_initialized()
