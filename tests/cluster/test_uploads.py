"""Where an item's recorded photo lies: uploads relative to the storage root, so a copy of the root finds them."""
from pathlib import Path

from cluster.uploads import new_upload, photo_path, upload_name


def test_an_upload_is_recorded_relative_to_the_root_and_found_in_any_copy_of_it(tmp_path):
    recorded = new_upload()
    assert recorded.startswith("uploads/") and not Path(recorded).is_absolute()
    assert recorded != new_upload()
    for root in (tmp_path / "live", tmp_path / "restored"):
        assert photo_path(recorded, root) == root / recorded


def test_records_from_before_point_into_this_roots_uploads():
    name = "0123456789abcdef0123456789abcdef.img"
    root = Path("/mnt/restored")
    for old in (f"/mnt/fashion/uploads/{name}", f"demo-data/uploads/{name}", f"./uploads/{name}"):
        assert upload_name(old) == name
        assert photo_path(old, root) == root / "uploads" / name


def test_a_catalogs_own_photo_is_read_where_it_is():
    root = Path("/mnt/fashion")
    for own in ("/data/catalog/images/15970.jpg", "/data/uploads/15970.jpg", "/data/uploads/../x.img",
                "/data/uploads/0123456789ABCDEF0123456789ABCDEF.img"):
        assert upload_name(own) is None
        assert photo_path(own, root) == Path(own)
