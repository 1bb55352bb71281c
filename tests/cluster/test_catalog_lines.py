"""`fashion-search index --catalog FILE.jsonl` (cluster/catalog_lines.py): an export's lines or a feed's
read as items, their attributes as the vocabulary spells them, a bad line refused by number before
anything is written. Indexing an export into a new root on a real cluster is in test_rest.py."""
import json

import pytest

from cluster.catalog_lines import photo_at, read_catalog_lines
from cluster.indexing import read_catalog, recorded_photo
from models.data import ASSETS
from models.taxonomy import Taxonomy
from shards.errors import InvalidInput

UPLOAD = "uploads/" + "a" * 32 + ".img"


def write_lines(path, items):
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in items))
    return path


def test_an_exports_lines_and_a_feeds_flat_lines_read_alike(tmp_path):
    root = tmp_path / "old-root"
    items = [{"id": 42, "attributes": ["articleType=Tshirts", "gender=Men"],
              "meta": {"title": "Blue tee", "image": UPLOAD}},
             {"id": "sku-7", "title": " Red dress ", "image": "/photos/7.jpg"},
             {"id": "9", "title": None, "attributes": None, "meta": {"image": "photos/9.jpg"}},
             {"id": 10, "productDisplayName": "Green cap", "image": "/photos/10.jpg"}]
    products = read_catalog_lines(write_lines(tmp_path / "c.jsonl", items), base=root)
    assert [(p.id, p.title, p.attributes) for p in products] == [
        ("42", "Blue tee", ("articleType=Tshirts", "gender=Men")), ("sku-7", "Red dress", None), ("9", "", None),
        ("10", "Green cap", None)]
    assert [str(p.image) for p in products] == [str(root / UPLOAD), "/photos/7.jpg", str(root / "photos/9.jpg"),
                                                "/photos/10.jpg"]
    assert recorded_photo(products[0].image) == UPLOAD        # an upload is recorded in the new root's uploads/
    assert recorded_photo(products[1].image) == "/photos/7.jpg"


def test_relative_paths_start_at_the_files_folder_unless_told(tmp_path):
    path = write_lines(tmp_path / "feed.jsonl", [{"id": 1, "image": "images/1.jpg"}])
    assert read_catalog(str(path))[0].image == tmp_path / "images" / "1.jpg"
    assert read_catalog(str(path), images=str(tmp_path / "x"))[0].image == tmp_path / "x" / "images" / "1.jpg"


def test_a_record_relative_to_an_older_index_runs_folder_is_found_there(tmp_path, monkeypatch):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "1.jpg").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert photo_at("cat/1.jpg", tmp_path / "root") == tmp_path / "cat" / "1.jpg"     # only there
    (tmp_path / "root" / "cat").mkdir(parents=True)
    (tmp_path / "root" / "cat" / "1.jpg").write_bytes(b"x")
    assert photo_at("cat/1.jpg", tmp_path / "root") == tmp_path / "root" / "cat" / "1.jpg"   # the base first


def test_given_attributes_are_read_as_the_vocabulary_spells_them(tmp_path):
    vocabulary = Taxonomy.load(ASSETS / "taxonomy.json")
    path = write_lines(tmp_path / "c.jsonl", [{"id": 1, "image": "1.jpg",
                                                "attributes": ["gender=men", "colour=navy blue", "brand=Acme",
                                                               "gender=Men"]}])
    [p] = read_catalog_lines(path, vocabulary=vocabulary)
    assert p.attributes == ("gender=Men", "baseColour=Navy Blue", "brand=Acme")     # one of each, a shop's own kept
    [p] = read_catalog(str(path))
    assert p.attributes == ("gender=Men", "baseColour=Navy Blue", "brand=Acme")


@pytest.mark.parametrize("line, says", [
    ("{not json", "line 2: not JSON"),
    ("[1, 2]", "line 2: a line is a JSON object"),
    ({"image": "1.jpg"}, "line 2: every line needs an id"),
    ({"id": True, "image": "1.jpg"}, "line 2: every line needs an id"),
    ({"id": "a/b", "image": "1.jpg"}, "line 2: an item id given as text cannot hold '/'"),
    ({"id": 3}, "line 2: every line names its photo"),
    ({"id": 3, "image": "3.jpg", "title": 5}, "line 2: title is a string"),
    ({"id": 3, "image": "3.jpg", "attributes": "gender=Men"}, "line 2: attributes are a list"),
    ({"id": 3, "image": "3.jpg", "attributes": []}, "line 2: attributes are a list"),
    ({"id": 3, "image": "3.jpg", "attributes": ["nofield"]}, "line 2: an attribute token is 'field=value'"),
    ({"id": 3, "image": "3.jpg", "attributes": ["a=1"] * 65}, "line 2: attributes are a list"),
    ({"id": 3, "meta": []}, "line 2: meta is an object"),
])
def test_a_bad_line_is_refused_by_its_number(tmp_path, line, says):
    path = write_lines(tmp_path / "c.jsonl", [{"id": 1, "image": "1.jpg"}, line])
    with pytest.raises(InvalidInput, match=says.replace("(", r"\(").replace("[", r"\[")):
        read_catalog(str(path))


def test_an_empty_or_missing_file_is_refused(tmp_path):
    with pytest.raises(InvalidInput, match="no catalog at"):
        read_catalog(str(tmp_path / "none.jsonl"))
    with pytest.raises(InvalidInput, match="has no lines"):
        read_catalog(str(write_lines(tmp_path / "empty.jsonl", ["", "  "])))


def test_what_export_writes_reads_back_as_the_same_items(tmp_path):
    """Random items (integer and text ids, any unicode titles, tokens in any order) written as
    `export` writes them (cluster/export.py: json.dumps of each listed item) read back unchanged."""
    import random
    rng = random.Random(7)
    alphabet = "abcXYZ éü中文 -_.,'\"\\/"
    items = []
    for n in range(300):
        item_id = rng.choice([n, f"sku-{n}", f"00{n}", f"ïd {n}"])
        tokens = list(dict.fromkeys(f"f{rng.randrange(5)}=v {rng.randrange(9)}" for _ in range(rng.randrange(1, 9))))
        image = rng.choice([f"/catalog/images/{n}.jpg", f"uploads/{n:032x}.img"])
        items.append({"id": item_id, "attributes": tokens,
                      "meta": {"title": "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40))).strip(),
                               "image": image}})
    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps(it) + "\n" for it in items))
    products = read_catalog_lines(path, base=tmp_path / "root")
    assert [p.id for p in products] == [str(it["id"]) for it in items]
    assert [p.title for p in products] == [it["meta"]["title"] for it in items]
    assert [list(p.attributes) for p in products] == [it["attributes"] for it in items]
    assert [recorded_photo(p.image) for p in products] == [it["meta"]["image"] for it in items]


def test_an_exported_items_url_comes_along_and_only_for_a_photo_it_fetched(tmp_path):
    url = "https://cdn.example.com/1.jpg"
    path = write_lines(tmp_path / "c.jsonl", [
        {"id": 1, "attributes": ["a=1"], "meta": {"title": "t", "image": UPLOAD, "source": url}},
        {"id": 2, "meta": {"title": "t", "image": url, "source": "https://elsewhere/2.jpg"}},   # fetched anew
        {"id": 3, "meta": {"title": "t", "image": "3.jpg", "source": "not a url"}}])
    assert [p.source for p in read_catalog_lines(path)] == [url, None, None]
