"""Training and shipping the title classifier on the shared product data."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from .data import ASSETS, Product, load_catalog, load_splits
from .taxonomy import FILE as TAXONOMY_FILE
from .taxonomy import Taxonomy
from .text import TitleClassifier, train_text

WEIGHTS = ASSETS / "text.pt"


def label(p: Product, classes: list[str]) -> str:
    t = p.fields.get("articleType", "other")
    return t if t in classes else "other"


def train_and_save_text(out: Path | None = None, epochs: int = 15) -> dict:
    cat, splits = load_catalog(), load_splits()
    train = [p for p in cat if p.id in splits["train"]]
    tax = Taxonomy.load(TAXONOMY_FILE) if TAXONOMY_FILE.exists() else Taxonomy.build(train)
    if not TAXONOMY_FILE.exists():
        tax.save()
    classes = [t.split("=", 1)[1] for t in tax.category_tokens()]
    model = train_text([p.title for p in train], [label(p, classes) for p in train], classes,
                       tax.values["baseColour"], epochs=epochs, log=lambda s: None)
    out = out or WEIGHTS
    model.save(out)
    return {"weights": str(out), "classes": len(classes), "train_titles": len(train)}


def load_text(path: Path | None = None) -> TitleClassifier:
    return TitleClassifier.load(path or WEIGHTS)


class TitleReading(NamedTuple):
    category: str | None         # the category the title alone names (None when unsure, or unknown to the taxonomy)
    stated: dict                 # the gender and colour its words state, as taxonomy fields
    belief: dict | None          # what it says about every category (TitleClassifier.predict), None: nothing


def read_titles(text: TitleClassifier, taxonomy: Taxonomy, titles: list[str]) -> list[TitleReading]:
    """Per seller's title, what it says. A catalog item's category is the one its title's belief
    and its photo together make most likely (models/attributes.py category_given_title); the
    gender and colour stated are forced as that category is (models/taxonomy.py STATED_FIELDS).
    A blank title states nothing: the photo reads it all."""
    known = {t.split("=", 1)[1] for t in taxonomy.category_tokens()}
    said = [i for i, t in enumerate(titles) if not (isinstance(t, str) and not t.strip())]  # a non-str: its error
    out = [TitleReading(None, {}, None) for _ in titles]
    for i, r in zip(said, text.predict([titles[i] for i in said]) if said else []):
        stated = {f: v for f, v in (("gender", r["gender"]), ("baseColour", r["colour"])) if v}
        out[i] = TitleReading(r["category"] if r["category"] in known else None, stated, r["belief"])
    return out
