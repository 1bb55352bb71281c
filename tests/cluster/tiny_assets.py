"""Tiny, untrained model files in a folder, for tests of the serving path (FASHION_ASSETS)."""
import shutil
from pathlib import Path

import numpy as np
import torch

from models.attributes import AttributeConfig, AttributeModel, EncoderConfig
from models.data import ASSETS
from models.features import CodeBook, FeatureConfig, FeatureExtractor, save_features
from models.taxonomy import Taxonomy
from models.text import TextConfig, train_text


def make_tiny_assets(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ASSETS / "taxonomy.json", folder / "taxonomy.json")
    tax = Taxonomy.load(folder / "taxonomy.json")
    torch.manual_seed(0)
    cfg = AttributeConfig(encoder=EncoderConfig(kind="resception", width=0.0625, image_size=80, pretrained=False),
                          embed=16, hidden=32)
    torch.save(AttributeModel(cfg, tax).eval().checkpoint(), folder / "attributes.pt")
    fcfg = FeatureConfig(image_size=64, bits=256)
    ext = FeatureExtractor(fcfg, pretrained=False)
    feats = ext(torch.randint(0, 255, (300, 64, 64, 3), dtype=torch.uint8)).numpy()
    save_features(folder / "features.pt", ext, CodeBook.fit(feats.astype(np.float64), 256))
    classes = [t.split("=", 1)[1] for t in tax.category_tokens()]
    titles = [f"Brand Men Blue {c}" for c in classes]
    text = train_text(titles, classes, classes, tax.values["baseColour"], TextConfig(buckets=1 << 10, dim=8),
                      epochs=5, log=lambda s: None)
    text.save(folder / "text.pt")
    return folder
