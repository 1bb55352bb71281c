"""Make the hard views every run reads, once per size, before the runs start (they share the cache)."""
import sys
import time

from models.train_attributes import hard_views, split_products

if __name__ == "__main__":      # the view makers are spawned processes: they import this file again
    train_p, val_p = split_products("train"), split_products("val")
    workers, limit = int(sys.argv[1]), int(sys.argv[2])
    if limit:
        train_p, val_p = train_p[:limit], val_p[: max(limit // 8, 16)]
    tag = limit or ""
    for size in map(int, sys.argv[3:]):
        t0 = time.time()
        hard_views(train_p, size, 4, f"train{tag}", workers=workers)
        hard_views(val_p, size, 1, f"val{tag}", seed=12, workers=workers)
        print(f"views {size}: {time.time() - t0:.0f} s", flush=True)
        open(f"/tmp/views-{size}.done", "w").close()
