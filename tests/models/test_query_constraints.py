"""Which recognised attributes a query requires and which only score."""
import numpy as np

from models.pipeline import REQUIRED_P, Analysis, split_constraints

ATTRS = [("masterCategory=Apparel", 0.99), ("articleType=Tops", 0.6), ("gender=Women", 0.95),
         ("baseColour=Blue", 0.4)]


def analysis(category, source):
    return Analysis(category=category, category_source=source, attributes=ATTRS, roi=(0, 0, 1, 1),
                    roi_source="user", code=np.zeros(4, np.uint64), hist=np.ones(8) / 8)


def test_a_category_the_model_read_unsurely_only_scores():
    assert 0.6 < REQUIRED_P <= 0.95
    a = analysis("Tops", "auto")
    assert a.required() == ("masterCategory=Apparel", "gender=Women")          # most confident first
    assert set(a.optional()) == {"articleType=Tops", "baseColour=Blue"}


def test_a_given_category_leads_whatever_its_probability():
    for source in ("user", "title"):
        a = analysis("Tops", source)
        assert a.required() == ("articleType=Tops", "masterCategory=Apparel", "gender=Women")
        assert a.optional() == ("baseColour=Blue",)


def test_required_and_optional_split_every_token_once():
    rng = np.random.default_rng(0)
    for _ in range(50):
        attrs = [(f"f{i}=v", float(p)) for i, p in enumerate(rng.random(rng.integers(0, 8)))]
        req, opt = split_constraints(attrs)
        assert sorted(req + opt) == sorted(t for t, _ in attrs)
        probs = dict(attrs)
        assert all(probs[t] >= REQUIRED_P for t in req) and all(probs[t] < REQUIRED_P for t in opt)
        assert [probs[t] for t in req] == sorted((probs[t] for t in req), reverse=True)
