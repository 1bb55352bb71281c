"""How a catalog item's photo and title are read together (Pipeline.items), with tiny untrained models."""
import numpy as np
import pytest
import torch
from PIL import Image

from models.framing import on_square
from models.pipeline import Pipeline
from models.text import TextConfig, train_text
from tests.cluster.tiny_assets import make_tiny_assets


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    p = Pipeline.load(make_tiny_assets(tmp_path_factory.mktemp("assets")))
    classes = [t.split("=", 1)[1] for t in p.taxonomy.category_tokens()]   # a text model sure of whole titles
    p.text = train_text([f"Brand Men Blue {c}" for c in classes], classes, classes, p.taxonomy.values["baseColour"],
                        TextConfig(buckets=1 << 12, dim=16), epochs=100, log=lambda s: None)
    return p


def test_an_items_category_is_the_likeliest_given_its_title_and_its_photo(pipeline):
    rng = np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)) for _ in range(5)]
    titles = ["Brand Men Blue Tshirts", "Brand Men Blue Jeans", "Brand", "", "zzqx"]
    read = pipeline.read_titles(titles)
    items = pipeline.items(photos, titles)
    names = [t.split("=", 1)[1] for t in pipeline.taxonomy.category_tokens()]
    with torch.no_grad():
        f, state = pipeline.attributes.encode(pipeline._attribute_input([on_square(p) for p in photos]))
        photo_p = pipeline.attributes.category_probs(f, state)
    for r, a, p in zip(read, items, photo_p):
        emitted = [t.split("=", 1)[1] for t, _ in a.attributes if t.startswith("articleType=")]
        assert emitted == [a.category]                       # what the item says is what it is indexed under
        if r.belief is None:                                 # a blank title, or no word the model knows
            assert a.category_source == "auto"
            continue
        joint = torch.tensor([max(r.belief[n], 1e-9) for n in names]) * p.clamp_min(1e-9)
        assert a.category == names[int(joint.argmax())]
        assert a.category_source == ("title" if a.category == r.category else "title and photo")
        assert {t for t, _ in a.attributes} >= {f"{k}={v}" for k, v in r.stated.items()}   # "Men", "Blue" forced
    assert [r.belief is None for r in read] == [False, False, False, True, True]
    # a whole title settles it; the photo reads the rest
    assert [(r.category, a.category, a.category_source) for r, a in zip(read[:2], items)] == [
        ("Tshirts", "Tshirts", "title"), ("Jeans", "Jeans", "title")]
