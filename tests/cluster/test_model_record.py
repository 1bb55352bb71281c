"""A storage root remembers which models made its index (cluster/model_record.py): the
feature model behind its codes and the attribute vocabulary behind its postings. Commands
that code photos with others are refused before they write or answer."""
import json

import pytest
import ray
import torch

from cluster.cli import main
from cluster.model_record import RECORD, check_models, features_digest, recorded_model, vocabulary_digest
from coordinator.placement import Placement
from shards.errors import InvalidInput


COLOURS = ["Black", "Blue"]


def assets(folder, content: bytes, colours=COLOURS, weights=0.0):
    """A features.pt of `content`, and an attributes.pt whose taxonomy has these colours."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "features.pt").write_bytes(content)
    taxonomy = {"fields": ["articleType", "baseColour"], "values": {"articleType": ["Shirts"], "baseColour": colours}}
    torch.save({"taxonomy": taxonomy, "state": {"w": torch.tensor([weights])}}, folder / "attributes.pt")
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


def test_an_attribute_model_of_another_vocabulary_is_refused(tmp_path):
    a = assets(tmp_path / "a", b"model a")
    root = tmp_path / "root"
    root.mkdir()
    check_models(root, a)
    assert json.loads((root / RECORD).read_text())["vocabulary"] == vocabulary_digest(a)
    retrained = assets(tmp_path / "retrained", b"model a", weights=1.0)    # other weights, same tokens
    assert check_models(root, retrained) == features_digest(a)
    record = (root / RECORD).read_text()
    other = assets(tmp_path / "other", b"model a", colours=["Black", "Blue", "Red"])
    with pytest.raises(InvalidInput, match=f"indexed under the attribute vocabulary {vocabulary_digest(a)}.*"
                                           f"reads the vocabulary {vocabulary_digest(other)}"):
        check_models(root, other)
    assert (root / RECORD).read_text() == record          # refused: nothing changed


def test_a_record_from_before_vocabularies_gains_ours(tmp_path):
    a = assets(tmp_path / "a", b"model a")
    root = tmp_path / "root"
    root.mkdir()
    (root / RECORD).write_text(json.dumps({"features": features_digest(a), "file": "/x/features.pt"}))
    check_models(root, a)
    d = json.loads((root / RECORD).read_text())
    assert d["features"] == features_digest(a) and d["file"] == "/x/features.pt"
    assert d["vocabulary"] == vocabulary_digest(a)
    with pytest.raises(InvalidInput, match="attribute vocabulary"):
        check_models(root, assets(tmp_path / "other", b"model a", colours=["Red"]))


def test_the_shipped_vocabulary_digest_follows_the_shipped_taxonomy():
    """The digest reads the tokens the attribute model emits: those of its own taxonomy."""
    from models.data import ASSETS
    from models.evaluation_cli import load_attributes
    import hashlib
    tokens = [t for t in load_attributes(ASSETS / "attributes.pt").taxonomy.tokens if "=" in t]
    assert vocabulary_digest(ASSETS) == hashlib.sha256("\n".join(sorted(tokens)).encode()).hexdigest()[:16]


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
