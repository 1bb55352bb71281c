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
    elsewhere = street_recognition(street_folder(tmp_path / "elsewhere", "spacesuit"), assets=assets)
    for out in (tagged, elsewhere):
        assert out["photos"] == 3 and out["unreadable"] == 1 and out["untagged"] == 0
        assert 0.0 <= out["category_required"] <= out["category_read"] <= 1.0
    assert tagged["category_read"] > 0
    assert tagged["category_in_tags"] == 1.0 and elsewhere["category_in_tags"] == 0.0
    assert tagged["category_read"] == elsewhere["category_read"]      # the same photos, read the same way
    # a photo without tags has nothing to check a reading against: counted apart, not as wrong
    untagged = street_recognition(street_folder(tmp_path / "untagged", ""), assets=assets)
    assert untagged["untagged"] == 3 and untagged["category_read"] == 0.0 and untagged["category_in_tags"] == 0.0


def test_photos_are_found_beside_the_tags_file_or_in_its_images_folder_and_a_bom_is_no_column(tmp_path):
    assets = make_tiny_assets(tmp_path / "assets")
    folder = street_folder(tmp_path / "bare", "skirt")
    rows = "".join(f"{i}.jpg,skirt\r\n" for i in range(3))        # names relative to images/, CRLF
    (folder / "tags.csv").write_text("\ufefffile_name,tags\r\n" + rows, encoding="utf-8")   # a spreadsheet's BOM
    out = street_recognition(folder, assets=assets)
    assert out["photos"] == 3 and out["unreadable"] == 1


def test_a_missing_or_malformed_tags_file_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidInput, match="no tags file at"):
        street_recognition(tmp_path)
    (tmp_path / "tags.csv").write_text("photo,labels\na.jpg,skirt\n")
    with pytest.raises(InvalidInput, match="missing columns"):
        street_recognition(tmp_path)
    (tmp_path / "tags.csv").write_text("file_name,tags\n")
    with pytest.raises(InvalidInput, match="has no rows"):
        street_recognition(tmp_path)
