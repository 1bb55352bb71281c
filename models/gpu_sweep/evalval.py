"""Validation precision/recall (unguided, beam 3) of each run's last checkpoint; its fp16 export to OUT."""
import json, os, sys, time
from pathlib import Path
import torch
from models.attributes import AttributeModel, normalise
from models.data import image_array
from models.evaluate import evaluate_attributes
from models.train_attributes import encode_products, export_weights, split_products
run, name, limit = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None
dev = "cuda" if torch.cuda.is_available() else "cpu"
ck = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
model = AttributeModel.from_checkpoint(ck).to(dev)
val = split_products("val")[:limit]
x = normalise(torch.from_numpy(image_array(val, model.cfg.encoder.image_size)), model.cfg.encoder.kind).to(dev)
seqs, _, sets = encode_products(val, model.taxonomy)
t0 = time.time()
out = evaluate_attributes(model, x, seqs.to(dev), sets, beam=3)
out.update({"run": name, "size": model.cfg.encoder.image_size, "frozen": model.cfg.encoder.frozen_blocks,
            "epochs": len(ck["history"]), "last": ck["history"][-1], "eval_s": round(time.time() - t0, 1)})
print(json.dumps(out), flush=True)
if os.environ.get("OUT"):
    export_weights(run / "last.pt", Path(os.environ["OUT"]) / f"{name}.pt")
