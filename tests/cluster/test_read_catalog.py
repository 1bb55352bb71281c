"""`fashion-search index`'s catalog: any CSV name or a folder; a bad one is a clear error before anything starts."""
import shutil
from pathlib import Path

import pytest

from cluster.indexing import read_catalog
from shards.errors import InvalidInput

DEMO = Path(__file__).resolve().parents[2] / "demo" / "catalog"


def small_copy(tmp_path, rows=5, name="styles.csv"):
    lines = (DEMO / "styles.csv").read_text().splitlines()[: rows + 1]
    (tmp_path / name).write_text("\n".join(lines) + "\n")
    return tmp_path / name


def test_a_csv_of_any_name_or_its_folder_reads_the_same_rows(tmp_path):
    named = small_copy(tmp_path, name="spring-drop.csv")
    shutil.copytree(DEMO / "images", tmp_path / "images")
    by_file = read_catalog(str(named))
    small_copy(tmp_path)
    by_folder = read_catalog(str(tmp_path))
    assert [p.id for p in by_file] == [p.id for p in by_folder] and len(by_file) == 5
    assert all(p.image.parent == tmp_path / "images" for p in by_file)


def test_the_photos_may_live_elsewhere(tmp_path):
    products = read_catalog(str(small_copy(tmp_path, name="c.csv")), images=str(DEMO / "images"))
    assert all(p.image.parent == DEMO / "images" and p.image.exists() for p in products)


def test_a_shops_csv_needs_only_ids_and_its_photos_may_be_png_or_webp(tmp_path):
    """Indexing reads photos and titles, never labels: a CSV of ids (and titles) is a catalog,
    and a photo saved under another usual suffix than .jpg is found. An evaluation, which
    needs the labels, still refuses such a CSV."""
    from PIL import Image
    from models.data import load_catalog
    (tmp_path / "c.csv").write_text("id,productDisplayName\n1,Roadster Men Blue Shirt\n2,\n3,Red Dress\n")
    (tmp_path / "images").mkdir()
    for name, fmt in (("1.png", "PNG"), ("2.webp", "WEBP"), ("3.jpg", "JPEG")):
        Image.new("RGB", (32, 32), "red").save(tmp_path / "images" / name, fmt)
    products = read_catalog(str(tmp_path / "c.csv"))
    assert [(p.id, p.title, p.image.name, p.fields) for p in products] == [
        ("1", "Roadster Men Blue Shirt", "1.png", {}), ("2", "", "2.webp", {}), ("3", "Red Dress", "3.jpg", {})]
    elsewhere = read_catalog(str(tmp_path / "c.csv"), images=str(tmp_path / "images"))
    assert [p.image for p in elsewhere] == [p.image for p in products]
    with pytest.raises(InvalidInput, match="missing columns"):
        load_catalog(tmp_path / "c.csv")


def test_a_title_column_named_title_is_read_as_the_title(tmp_path):
    """A shop's CSV calls it `title`; the shared data `productDisplayName`, which wins where both are."""
    (tmp_path / "images").mkdir()
    (tmp_path / "a.csv").write_text("id,title\n1,Roadster Men Blue Shirt\n")
    assert [p.title for p in read_catalog(str(tmp_path / "a.csv"))] == ["Roadster Men Blue Shirt"]
    (tmp_path / "b.csv").write_text("id,title,productDisplayName\n1,internal name,Red Dress\n")
    assert [p.title for p in read_catalog(str(tmp_path / "b.csv"))] == ["Red Dress"]
    (tmp_path / "c.csv").write_text("id,name\n1,Red Dress\n")
    assert [p.title for p in read_catalog(str(tmp_path / "c.csv"))] == [""]


@pytest.mark.parametrize("make, says", [
    (lambda t: t / "none.csv", "no catalog at"),
    (lambda t: (t / "c.csv").write_text("sku,gender\n1,Men\n") and t / "c.csv", r"missing columns \['id'\]"),
    (lambda t: (t / "c.csv").write_bytes(b"\xff\xfe\x00id") and t / "c.csv", "cannot read the catalog"),
    (lambda t: small_copy(t, name="c.csv"), "no images folder at"),
])
def test_a_bad_catalog_is_a_clear_error(tmp_path, make, says):
    with pytest.raises(InvalidInput, match=says):
        read_catalog(str(make(tmp_path)))


def test_the_index_command_rejects_a_bad_catalog_before_it_starts_anything(tmp_path, capsys):
    from cluster.cli import main
    storage = tmp_path / "storage"
    catalog = small_copy(tmp_path, name="c.csv")
    assert main(["index", "--catalog", str(catalog), "--images", str(tmp_path / "nope"),
                 "--storage", str(storage)]) == 2
    assert "no images folder at" in capsys.readouterr().err
    assert not storage.exists()


def test_rows_that_repeat_an_id_are_set_aside_and_the_first_is_kept(tmp_path):
    from cluster.indexing import first_of_each_id
    path = small_copy(tmp_path, rows=4, name="c.csv")
    lines = path.read_text().splitlines()
    repeated = lines[2].split(",", 1)[0] + ",Other," + lines[2].split(",", 2)[2]  # same id, another gender
    slashed = "a/b," + lines[3].split(",", 1)[1]
    padded = "0" + lines[3]                              # SKU "0<id>" is another item than <id>
    path.write_text("\n".join(lines + [repeated, slashed, lines[1], padded]) + "\n")
    kept, aside = first_of_each_id(read_catalog(str(path), images=str(DEMO / "images")))
    assert [p.id for p in kept] == [line.split(",", 1)[0] for line in lines[1:]] + ["0" + lines[3].split(",")[0]]
    assert [p.id for p, _ in aside] == [lines[2].split(",", 1)[0], "a/b", lines[1].split(",", 1)[0]]
    assert ["repeats" in why for _, why in aside] == [True, False, True] and "'/'" in aside[1][1]
    assert kept[1].fields.get("gender") != "Other"


@pytest.mark.parametrize("raw, want", [("42", 42), ("0", 0), ("007", "007"), ("sku-1", "sku-1"),
                                       ("9" * 19, "9" * 19), ("ünï", "ünï")])
def test_an_id_written_as_text(raw, want):
    from shards.codes import id_from_text
    assert id_from_text(raw) == want and type(id_from_text(raw)) is type(want)


@pytest.mark.parametrize("raw", ["a/b", "", "x" * 300, "tab\there"])
def test_an_id_no_url_could_name_is_refused(raw):
    from shards.codes import id_from_text
    with pytest.raises(InvalidInput):
        id_from_text(raw)


def test_a_sync_skips_rows_as_indexed_redoes_changed_ones_and_deletes_only_catalog_items_no_row_names():
    from types import SimpleNamespace

    from cluster.indexing import sync_plan
    rows = [SimpleNamespace(title=f"t{i}", image=Path(f"/cat/images/{i}.jpg"), attributes=None) for i in range(5)]
    ids = [0, 1, 2, "sku-3", 4]
    upload = "uploads/" + "f" * 32 + ".img"
    indexed = {0: {"title": "t0", "image": "/cat/images/0.jpg"},          # as its row: skipped
               1: {"title": "old", "image": "/cat/images/1.jpg"},         # title changed: indexed again
               2: {"title": "t2", "image": "/elsewhere/2.jpg"},           # photo moved: indexed again
               9: {"title": "t9", "image": "/cat/images/9.jpg"},          # no row names it: deleted
               "api": {"title": "added", "image": upload},                # added through the API: kept
               "old-api": {"title": "added", "image": "/mnt/old/uploads/" + "e" * 32 + ".img"}}   # kept too
    indexed = {i: {"attributes": ["a=b"], "meta": meta} for i, meta in indexed.items()}
    fetched = {"title": "t8", "image": "uploads/" + "d" * 32 + ".img", "source": "https://cdn.example/8.jpg"}
    indexed[8] = {"attributes": ["a=b"], "meta": fetched}        # a row's photo fetched by URL, kept in uploads/
    same, gone = sync_plan(rows, ids, indexed)
    assert same == {0} and gone == [9, 8]       # a catalog's row brought the fetched one: it goes with its row
    # a JSON-lines catalog (an export) speaks for uploaded photos too
    assert sync_plan(rows, ids, indexed, uploads_too=True)[1] == [9, "api", "old-api", 8]


def test_a_shops_csv_may_name_each_photo_by_path_or_url(tmp_path):
    """A photo column (`image`, or Google's feed's `image_link`, or `image_url`): an http(s) URL is
    kept for `index` to fetch, a relative path starts at --images or else the CSV's folder, an
    empty cell means images/<id>.jpg; another scheme is refused naming the row, before anything starts."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "images").mkdir()
    (tmp_path / "c.csv").write_text("id,title,image_link\n1,Red Dress,https://cdn.example/1.jpg\n"
                                    "2,Blue Shirt,photos/2.png\n3,Tee,\n4,Cap,/abs/4.jpg\n")
    products = read_catalog(str(tmp_path / "c.csv"))
    assert [p.image for p in products] == ["https://cdn.example/1.jpg", tmp_path / "photos" / "2.png",
                                           tmp_path / "images" / "3.jpg", Path("/abs/4.jpg")]
    elsewhere = read_catalog(str(tmp_path / "c.csv"), images=str(tmp_path / "photos"))
    photos = tmp_path / "photos"
    assert [p.image for p in elsewhere][1:3] == [photos / "photos" / "2.png", photos / "3.jpg"]
    # every row names its photo: no images folder is needed
    shop = tmp_path / "shop"
    shop.mkdir()
    (shop / "d.csv").write_text("id,image\n1,https://cdn.example/1.jpg\n2,photos/2.png\n")
    assert [p.id for p in read_catalog(str(shop / "d.csv"))] == ["1", "2"]
    # a row that relies on images/<id>.jpg still needs the folder
    (shop / "e.csv").write_text("id,image\n1,https://cdn.example/1.jpg\n2,\n")
    with pytest.raises(InvalidInput, match="no images folder"):
        read_catalog(str(shop / "e.csv"))
    # a product feed is often tab-separated: a .tsv is read so
    (shop / "g.tsv").write_text("id\ttitle\timage_link\n1\tRed, long dress\thttps://cdn.example/1.jpg\n")
    assert [(p.title, p.image) for p in read_catalog(str(shop / "g.tsv"))] == [
        ("Red, long dress", "https://cdn.example/1.jpg")]
    (shop / "f.csv").write_text("id,image\n1,https://cdn.example/1.jpg\nsku-2,ftp://cdn.example/2.jpg\n")
    with pytest.raises(InvalidInput, match=r"row 2 \(id 'sku-2'\): a photo's URL is http:// or https://"):
        read_catalog(str(shop / "f.csv"))


def test_a_sync_redoes_a_row_whose_given_attributes_or_uploaded_photo_differ(tmp_path):
    from types import SimpleNamespace

    from cluster.indexing import sync_plan
    upload = "uploads/" + "f" * 32 + ".img"
    rows = [SimpleNamespace(title="t", image=tmp_path / "old-root" / upload, attributes=("a=1", "b=2")),
            SimpleNamespace(title="t", image=tmp_path / "old-root" / upload, attributes=("a=1", "b=3")),
            SimpleNamespace(title="t", image=tmp_path / "old-root" / upload, attributes=None),
            SimpleNamespace(title="t", image=tmp_path / "old-root" / "uploads" / ("e" * 32 + ".img"), attributes=None)]
    item = {"attributes": ["b=2", "a=1"], "meta": {"title": "t", "image": upload}}   # as copied into this root
    same, _ = sync_plan(rows, [0, 1, 2, 3], {i: item for i in range(4)})
    assert same == {0, 2}      # 1: a corrected attribute; 3: another photo


def test_a_record_relative_to_an_older_runs_folder_is_read_from_this_one(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from cluster.indexing import sync_plan
    monkeypatch.chdir(tmp_path)
    rows = [SimpleNamespace(title="t", image=tmp_path / "cat" / "images" / "0.jpg", attributes=None)]
    item = {"attributes": ["a=1"], "meta": {"title": "t", "image": "cat/images/0.jpg"}}
    assert sync_plan(rows, [0], {0: item})[0] == {0}


def test_a_sync_redoes_rows_whose_photo_was_modified_after_the_last_sync_began(tmp_path):
    import os
    from types import SimpleNamespace

    from cluster.indexing import sync_plan
    rows = []
    for i, age in enumerate((100, 100, 10)):
        photo = tmp_path / f"{i}.jpg"
        photo.write_bytes(b"jpeg")
        os.utime(photo, (1000 - age, 1000 - age))
        rows.append(SimpleNamespace(title=f"t{i}", image=photo, attributes=None))
    rows.append(SimpleNamespace(title="t3", image=tmp_path / "gone.jpg", attributes=None))   # its photo is missing now
    indexed = {i: {"attributes": [], "meta": {"title": r.title, "image": str(r.image)}} for i, r in enumerate(rows)}
    assert sync_plan(rows, [0, 1, 2, 3], indexed)[0] == {0, 1, 2, 3}        # no earlier sync: paths decide
    assert sync_plan(rows, [0, 1, 2, 3], indexed, since=950)[0] == {0, 1}   # modified at 990; gone


def test_a_sync_that_would_delete_too_much_is_refused():
    from cluster.indexing import check_deletions
    check_deletions(10, 20, 0.1)              # ten may always go
    check_deletions(100, 1000, 0.1)
    with pytest.raises(InvalidInput, match="no longer names 101 of the 1000"):
        check_deletions(101, 1000, 0.1)
    check_deletions(900, 1000, 0.9)


def test_the_index_command_warns_when_no_row_has_a_title(tmp_path, capsys):
    """Every item would be read from its photo alone: said before anything starts (this dry run then
    stops, as its storage root holds no cluster)."""
    from cluster.cli import main
    (tmp_path / "images").mkdir()
    (tmp_path / "c.csv").write_text("id,name\n1,Red Dress\n")
    assert main(["index", "--catalog", str(tmp_path / "c.csv"), "--storage", str(tmp_path / "none"),
                 "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "warning: no row of" in err and "has a title (a productDisplayName or title column" in err
    (tmp_path / "d.csv").write_text("id,title\n1,Red Dress\n")
    main(["index", "--catalog", str(tmp_path / "d.csv"), "--storage", str(tmp_path / "none"), "--dry-run"])
    assert "warning" not in capsys.readouterr().err


def test_a_catalog_named_relative_to_here_records_whole_photo_paths(tmp_path, monkeypatch):
    """An item's record must not depend on the folder `index` ran in: `serve` started elsewhere
    (a service's /) still finds the photos."""
    small_copy(tmp_path)
    shutil.copytree(DEMO / "images", tmp_path / "images")
    monkeypatch.chdir(tmp_path)
    for catalog, images in (("styles.csv", None), (".", None), ("styles.csv", "images")):
        products = read_catalog(catalog, images)
        assert all(p.image.is_absolute() and p.image.parent == tmp_path / "images" for p in products)
