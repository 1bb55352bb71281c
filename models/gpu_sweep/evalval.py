"""Validation precision/recall (unguided: the text model is not carried, beam 3) of a run's last
checkpoint, on the GPU when there is one; its half-precision export to $OUT when OUT is set.

    python models/gpu_sweep/evalval.py RUN_DIR NAME [LIMIT]
"""
import json
import os
import sys
import time
from pathlib import Path

import torch

from models.evaluation_cli import eval_attributes
from models.train_attributes import export_weights

run, name, limit = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None
ck = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
t0 = time.time()
out = eval_attributes(split="val", weights=run / "last.pt", limit=limit, guided=False,
                      device="cuda" if torch.cuda.is_available() else "cpu")
enc = ck["config"]["encoder"]
out.update({"run": name, "size": enc["image_size"], "frozen": enc["frozen_blocks"], "epochs": len(ck["history"]),
            "last": ck["history"][-1], "eval_s": round(time.time() - t0, 1)})
print(json.dumps(out), flush=True)
if os.environ.get("OUT"):
    export_weights(run / "last.pt", Path(os.environ["OUT"]) / f"{name}.pt")
