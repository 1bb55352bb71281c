"""Paper Fig. 5a: ResCeption against plain Inception-v3, same small configuration and data.

    python -m models.compare_encoders --epochs 6 --limit 3000 --width 0.25 --image-size 112

trains the attribute model with each encoder from scratch (same seed, data, schedule)
and plots their training and validation NLL curves in models/results/fig5a.png.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .attributes import AttributeConfig, EncoderConfig
from .train_attributes import train_attributes

OUT = Path(__file__).resolve().parent / "results"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--limit", type=int, default=3000)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--runs", default="runs/fig5a")
    args = ap.parse_args(argv)
    histories = {}
    for kind in ("resception", "inception"):
        cfg = AttributeConfig(encoder=EncoderConfig(kind=kind, width=args.width, image_size=args.image_size,
                                                    pretrained=False))
        rep = train_attributes(cfg, Path(args.runs) / kind, epochs=args.epochs, limit=args.limit,
                               log=lambda s: print(s, flush=True))
        histories[kind] = rep["history"]
    OUT.mkdir(exist_ok=True)
    (OUT / "fig5a.json").write_text(json.dumps({"config": vars(args), "histories": histories}, indent=1))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for kind, style in (("resception", "-"), ("inception", "--")):
        h = histories[kind]
        ax.plot([e["epoch"] for e in h], [e["train_nll"] for e in h], style, color="C0" if kind == "resception"
                else "C1", label=f"{kind} train")
        ax.plot([e["epoch"] for e in h], [e["val_nll"] for e in h], style, color="C2" if kind == "resception"
                else "C3", label=f"{kind} validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("attribute sequence NLL per token")
    ax.set_title(f"ResCeption vs Inception-v3 (width {args.width}, {args.image_size}px, {args.limit} images)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "fig5a.png", dpi=110)
    print(json.dumps({k: h[-1] for k, h in histories.items()}))


if __name__ == "__main__":
    main()
