"""Which recognised attributes a query requires and which only score."""
import numpy as np

from models.pipeline import ALTERNATIVE_P, REQUIRED_P, Analysis, index_tokens, query_terms

ATTRS = [("masterCategory=Apparel", 0.99), ("articleType=Tops", 0.6), ("gender=Women", 0.95),
         ("baseColour=Blue", 0.4)]


def analysis(category, source):
    return Analysis(category=category, category_source=source, attributes=ATTRS, roi=(0, 0, 1, 1),
                    roi_source="user", code=np.zeros(4, np.uint64), hist=np.ones(8) / 8)


def test_a_category_the_model_read_unsurely_only_scores():
    assert 0.6 < REQUIRED_P <= 0.95
    terms = analysis("Tops", "auto").query_terms()
    assert terms["required"] == ("masterCategory=Apparel", "gender=Women")          # most confident first
    assert set(terms["optional"]) == {"articleType=Tops", "baseColour=Blue"}


def test_a_given_category_leads_whatever_its_probability():
    for source in ("user", "title"):
        terms = analysis("Tops", source).query_terms()
        assert terms["required"] == ("articleType=Tops", "masterCategory=Apparel", "gender=Women")
        assert terms["optional"] == ("baseColour=Blue",)


def test_required_and_optional_split_every_token_once():
    rng = np.random.default_rng(0)
    for _ in range(50):
        attrs = [(f"f{i}=v", float(p)) for i, p in enumerate(rng.random(rng.integers(0, 8)))]
        terms = query_terms(attrs)
        req, opt = terms["required"], terms["optional"]
        assert sorted(req + opt) == sorted(t for t, _ in attrs)
        probs = dict(attrs)
        assert all(probs[t] >= REQUIRED_P for t in req) and all(probs[t] < REQUIRED_P for t in opt)
        assert [probs[t] for t in req] == sorted((probs[t] for t in req), reverse=True)
        assert terms["widen"] == len(req)       # none of these fields says what an item is: each only narrows


def test_an_item_is_indexed_under_its_read_and_likely_runners_up_but_one_category():
    assert 0.0 < ALTERNATIVE_P < 0.5
    alts = [("usage=Sports", ALTERNATIVE_P), ("usage=Formal", ALTERNATIVE_P / 2), ("articleType=Shirts", 0.3),
            ("gender=Women", 0.2), ("baseColour=Navy Blue", 0.25)]
    tokens = index_tokens(ATTRS, alts)
    assert tokens[: len(ATTRS)] == [t for t, _ in ATTRS]                  # the read first, unchanged
    assert tokens[len(ATTRS):] == ["usage=Sports", "baseColour=Navy Blue"]  # no repeat, no second category
    a = analysis("Tops", "title")
    a.alternatives = alts
    assert a.index_tokens() == tokens
    assert index_tokens(ATTRS, []) == [t for t, _ in ATTRS]


def test_catalog_items_carry_their_runners_up_from_the_model(tmp_path, monkeypatch):
    """The item path wires the model's runners-up through to the tokens an item is indexed under."""
    from PIL import Image

    import models.pipeline as pipeline_module
    from models.pipeline import Pipeline

    from ..cluster.tiny_assets import make_tiny_assets
    p = Pipeline.load(make_tiny_assets(tmp_path / "assets"))
    monkeypatch.setattr(pipeline_module, "ALTERNATIVE_P", 0.002)   # an untrained model's values are all unlikely
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (90, 70, 3), dtype=np.uint8)) for _ in range(2)]
    items = p.items(imgs, ["Brand Men Blue Shirts", "Brand Men Blue Tshirts"])
    for a in items:
        assert a.alternatives and all(prob >= 0.002 for _, prob in a.alternatives)
        tokens = a.index_tokens()
        assert tokens[: len(a.attributes)] == [t for t, _ in a.attributes]
        assert sum(t.startswith("articleType=") for t in tokens) == 1
        assert set(tokens) == {t for t, _ in a.attributes} | {t for t, _ in a.alternatives
                                                             if not t.startswith("articleType=")}
    assert p.query(imgs[0]).alternatives == []      # a query does not read what only items use


def test_what_an_item_is_comes_first_and_the_rest_only_narrows_a_scan_over_budget():
    from models.pipeline import SCAN_BUDGET, WHAT_IT_IS
    attrs = [("masterCategory=Apparel", 0.99), ("articleType=Tops", 0.9), ("gender=Women", 0.86),
             ("baseColour=Blue", 0.97), ("season=Summer", 0.92), ("usage=Casual", 0.5)]
    terms = query_terms(attrs)
    assert terms["required"] == ("masterCategory=Apparel", "articleType=Tops", "gender=Women",
                                 "baseColour=Blue", "season=Summer")
    assert terms["optional"] == ("usage=Casual",)
    assert terms["widen"] == 2 and terms["scan_budget"] == SCAN_BUDGET and 0 < SCAN_BUDGET < 1
    assert all(t.split("=")[0] in WHAT_IT_IS for t in terms["required"][:-terms["widen"]])
    given = query_terms(attrs, "Dresses")    # a given category leads, and is never widened away
    assert given["required"][0] == "articleType=Dresses" and given["widen"] == 2
    assert analysis("Tops", "auto").query_terms()["widen"] == 0    # nothing sure beyond what it is
