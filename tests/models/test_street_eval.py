"""Recognition on street photos against their tags, at tiny sizes."""
import json

import pytest
from PIL import Image

from models.detector import MAPPING_FILE
from models.street_eval import street_recognition
from shards.errors import InvalidInput

from ..cluster.tiny_assets import make_tiny_assets


def street_folder(path, tags: str):
    (path / "images").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (120, 160), (40 * i, 90, 200)).save(path / "images" / f"{i}.jpg")
    (path / "images" / "2.jpg").write_bytes(b"not a photo")
    (path / "tags.csv").write_text("file_name,tags\n" + "".join(f"images/{i}.jpg,{tags}\n" for i in range(3)))
    return path


def test_a_category_counts_as_right_exactly_when_a_class_it_maps_to_is_tagged(tmp_path):
    assets = make_tiny_assets(tmp_path / "assets")
    every_class = "|".join(sorted({c for cs in json.loads(MAPPING_FILE.read_text()).values()
                                   for c in cs}))
    tagged = street_recognition(street_folder(tmp_path / "tagged", every_class), assets=assets)
    untagged = street_recognition(street_folder(tmp_path / "untagged", ""), assets=assets)
    for out in (tagged, untagged):
        assert out["photos"] == 3 and out["unreadable"] == 1
        assert 0.0 <= out["category_required"] <= out["category_read"] <= 1.0
    assert tagged["category_read"] > 0
    assert tagged["category_in_tags"] == 1.0 and untagged["category_in_tags"] == 0.0
    assert tagged["category_read"] == untagged["category_read"]      # the same photos, read the same way


def test_a_missing_or_malformed_tags_file_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidInput, match="no tags file at"):
        street_recognition(tmp_path)
    (tmp_path / "tags.csv").write_text("photo,labels\na.jpg,skirt\n")
    with pytest.raises(InvalidInput, match="missing columns"):
        street_recognition(tmp_path)
    (tmp_path / "tags.csv").write_text("file_name,tags\n")
    with pytest.raises(InvalidInput, match="has no rows"):
        street_recognition(tmp_path)
