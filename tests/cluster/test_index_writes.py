"""What indexing does to the photos kept in the root's uploads/ when it writes an item again
(cluster/indexing.py `_write_batches`): the photo the item no longer records goes, after the
write; the one it still records stays, however an older record spelt its path. The real
runs are in test_move_catalog.py; this is the rule, on a stand-in for the cluster."""
import io
import json
from pathlib import Path

import numpy as np

from cluster.indexing import _write_batches


class Cluster:
    def __init__(self, root: Path):
        self.root, self.written = root, []

    def upsert(self, ids, codes, hists, attributes, metas):
        assert all(Path(photo).exists() for photo in self.on_disk(metas))   # the new photo is there first
        self.written += list(zip(ids, metas))

    def on_disk(self, metas):
        return [self.root / m["image"] if m["image"].startswith("uploads/") else m["image"] for m in metas]


def batch(rows):
    """rows: (id, image): one analysed batch as Ray Data hands it over."""
    return {"id": [i for i, _ in rows], "error": [""] * len(rows), "image": [im for _, im in rows],
            "row_image": [im for _, im in rows], "code": [np.zeros(4, np.uint64).tobytes()] * len(rows),
            "hist": [np.zeros(8, np.float32).tobytes()] * len(rows), "attributes": [json.dumps(["a=b"])] * len(rows),
            "title": ["t"] * len(rows), "source": [""] * len(rows)}


def test_the_photo_an_item_no_longer_records_goes_and_the_one_it_records_stays(tmp_path):
    root = tmp_path / "root"
    (root / "uploads").mkdir(parents=True)
    names = {k: k * 32 + ".img" for k in "abcd"}
    for n in names.values():
        (root / "uploads" / n).write_bytes(b"photo")
    catalog_photo = tmp_path / "shop" / "7.jpg"
    catalog_photo.parent.mkdir()
    catalog_photo.write_bytes(b"photo")
    cluster = Cluster(root)
    was = {1: f"uploads/{names['a']}",                      # written again with another upload: a goes
           2: f"/mnt/old-root/uploads/{names['b']}",        # an older record of the same photo: b stays
           3: f"uploads/{names['c']}",                      # written from a catalog file: c goes
           4: str(catalog_photo)}                           # a catalog's own file: never touched
    rows = [(1, str(root / "uploads" / names["d"])), (2, str(root / "uploads" / names["b"])),
            (3, str(catalog_photo)), (4, str(root / "uploads" / names["d"])), (5, str(catalog_photo))]
    written, failed = _write_batches(cluster, [batch(rows)], io.StringIO(), 5, 0.0, lambda s: None, was=was)
    assert (written, failed) == (5, 0) and [i for i, _ in cluster.written] == [1, 2, 3, 4, 5]
    assert sorted(p.name for p in (root / "uploads").iterdir()) == [names["b"], names["d"]]
    assert catalog_photo.exists()
