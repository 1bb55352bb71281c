"""Title classifier, taxonomy and data loading."""
import re
from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image

from models.data import decode_image, load_catalog, make_splits, Product
from models.text import TextConfig, TitleClassifier, train_text
from shards.errors import InvalidInput


def test_title_classifier_learns_and_reads_gender_and_colour():
    titles = ["Turtle Check Men Navy Blue Shirt", "Puma Men Black Casual Shoes", "Nike Women White Sports Shoes",
              "Arrow Men Blue Formal Shirt", "Bata Women Brown Casual Shoes", "Lee Men Grey Shirt"] * 4
    labels = ["Shirts", "Casual Shoes", "Sports Shoes", "Shirts", "Casual Shoes", "Shirts"] * 4
    model = train_text(titles, labels, ["Shirts", "Casual Shoes", "Sports Shoes"], ["Blue", "Navy Blue", "Black"],
                       TextConfig(buckets=1 << 12, dim=8), epochs=30, log=lambda s: None)
    r = model.predict(["Roadster Men Navy Blue Shirt", "Woodland Women Black Casual Shoes"])
    assert [x["category"] for x in r] == ["Shirts", "Casual Shoes"]
    assert r[0]["gender"] == "Men" and r[0]["colour"] == "Navy Blue"
    assert r[1]["gender"] == "Women" and r[1]["colour"] == "Black"
    with pytest.raises(InvalidInput, match="non-empty"):
        model.predict([""])


def _tiny_text():
    titles = ["Turtle Check Men Navy Blue Shirt", "Puma Men Black Casual Shoes", "Arrow Men Blue Formal Shirt"] * 4
    labels = ["Shirts", "Casual Shoes", "Shirts"] * 4
    return train_text(titles, labels, ["Shirts", "Casual Shoes"], ["Blue", "Navy Blue", "Black"],
                      TextConfig(buckets=1 << 12, dim=8), epochs=30, log=lambda s: None)


def test_a_title_of_words_training_never_saw_is_unknown_not_a_confident_guess():
    """Before, "hello" or "." read through hash buckets no training title reached (random from the
    start) and came out a T-shirt or a jacket at p > 0.99, and that category was forced on the photo."""
    model = _tiny_text()
    for nothing in ("hello", ".", "SKU-48213", "zzqx wvyk"):
        r = model.predict([nothing])[0]
        assert r["category"] == "unknown" and r["confidence"] == 0.0, (nothing, r)
    assert model.predict(["Roadster Men Shirt"])[0]["category"] == "Shirts"     # one word known is enough
    # what an unseen bucket holds never moves a reading: scramble all of them, the same probabilities
    titles = ["Roadster Men Navy Blue Shirtz", "Woodland Black Casual Shoez", "hello"]
    before = model(titles)
    with torch.no_grad():
        model.embed.weight[~model.seen] = torch.randn(int((~model.seen).sum()), 8) * 100
    assert torch.equal(model(titles), before)


def test_a_title_cut_to_its_brand_reads_as_what_the_brand_sells_not_one_category_for_sure():
    titles = ["Puma Men Black Casual Shoes", "Puma Men Blue Tshirts", "Nike Women White Casual Shoes",
              "Nike Men Red Tshirts", "Arrow Men Blue Shirts"] * 4
    labels = ["Casual Shoes", "Tshirts", "Casual Shoes", "Tshirts", "Shirts"] * 4
    classes = ["Casual Shoes", "Tshirts", "Shirts"]
    model = train_text(titles, labels, classes, ["Black", "Blue"], TextConfig(buckets=1 << 12, dim=8),
                       epochs=30, log=lambda s: None)
    puma = model.predict(["Puma"])[0]["belief"]
    assert puma["Casual Shoes"] > 0.25 and puma["Tshirts"] > 0.25 and puma["Shirts"] < 0.2, puma
    assert model.predict(["Puma Men Black Casual Shoes"])[0]["category"] == "Casual Shoes"
    assert model.predict(["hello"])[0]["belief"] is None
    for b in [r["belief"] for r in model.predict(["Arrow Men Shirts", "Nike Men"])]:
        assert abs(sum(b.values()) - 1) < 1e-5 and set(b) == set(classes)
    # the catalog's prior (Shirts a fifth of the titles) is divided out, as the photo model learnt it too
    assert torch.allclose(model.prior, torch.tensor([9.0, 9.0, 5.0]) / 23)


def test_titles_in_any_script_have_words_and_full_width_letters_read_as_plain_ones():
    """A Korean shop's catalog trains and reads (before, only a-z and 0-9 made words: a Hangul title
    had none, and every one hashed to the same bucket)."""
    titles = ["남성 청바지 슬림핏", "여성 원피스 플라워", "남성 데님 청바지", "여성 롱 원피스"] * 4
    labels = ["Jeans", "Dresses", "Jeans", "Dresses"] * 4
    model = train_text(titles, labels, ["Jeans", "Dresses"], ["Blue"], TextConfig(buckets=1 << 12, dim=8),
                       epochs=30, log=lambda s: None)
    assert [r["category"] for r in model.predict(["청바지 블루", "원피스 레드"])] == ["Jeans", "Dresses"]
    assert model.predict(["ＮＩＫＥ"])[0]["category"] == "unknown"                   # a word it never saw
    english = _tiny_text()
    assert english.predict(["ＲＯＡＤＳＴＥＲ ＭＥＮ ＳＨＩＲＴ"]) == english.predict(["Roadster Men Shirt"])


def test_a_title_classifier_file_holds_only_what_training_reached_and_reads_back_the_same(tmp_path):
    model = _tiny_text()
    model.save(tmp_path / "text.pt")
    back = TitleClassifier.load(tmp_path / "text.pt")
    model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})    # stored as fp16
    titles = ["Roadster Men Navy Blue Shirt", "Woodland Women Black Casual Shoes", "hello", "Shirtz"]
    assert torch.equal(back(titles), model(titles)) and back.predict(titles) == model.predict(titles)
    stored = torch.load(tmp_path / "text.pt")["state"]["embed.weight"]
    assert stored.shape[0] == int(model.seen.sum()) < model.cfg.buckets
    # a file written before the vocabulary was kept still reads, every bucket as it was trained
    old = {"config": asdict(model.cfg), "classes": model.classes, "colours": model.colours,
           "state": {k: v.half() for k, v in model.state_dict().items()}}
    torch.save(old, tmp_path / "old.pt")
    assert TitleClassifier.load(tmp_path / "old.pt").seen is None
    assert torch.equal(back.prior, model.prior)
    assert [r["belief"] for r in back.predict(titles)] == [r["belief"] for r in model.predict(titles)]
    state = dict(torch.load(tmp_path / "text.pt")["state"])
    state["seen_rows"] = state["seen_rows"][:-1]              # a damaged file: a clear error
    torch.save({**old, "state": state}, tmp_path / "bad.pt")
    with pytest.raises(InvalidInput, match="damaged title classifier"):
        TitleClassifier.load(tmp_path / "bad.pt")


def test_splits_are_deterministic_and_stratified():
    prods = [Product(id=str(i), fields={"articleType": f"t{i % 3}"}, title="", image=None) for i in range(300)]
    a, b = make_splits(prods), make_splits(list(reversed(prods)))
    assert a == b
    assert len(a["test"]) == 30 and len(a["val"]) == 30
    assert {int(i) % 3 for i in a["test"]} == {0, 1, 2}


def test_catalog_errors(tmp_path):
    (tmp_path / "styles.csv").write_text("")
    with pytest.raises(InvalidInput):
        load_catalog(tmp_path)
    (tmp_path / "styles.csv").write_text("id,gender\n1,Men\n")
    with pytest.raises(InvalidInput, match="missing columns"):
        load_catalog(tmp_path)


def test_bad_images_are_invalid_input(tmp_path):
    with pytest.raises(InvalidInput):
        decode_image(b"")
    with pytest.raises(InvalidInput, match="not a format Pillow decodes") as refused:
        decode_image(b"this is not an image")
    assert "BytesIO" not in str(refused.value)          # the user's upload, not our stream object
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InvalidInput, match=f"not a readable image {tmp_path / 'notes.txt'}"):
        decode_image(tmp_path / "notes.txt")
    good = tmp_path / "a.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(good)
    data = good.read_bytes()
    with pytest.raises(InvalidInput):
        decode_image(data[: len(data) // 2])          # truncated
    assert decode_image(data).size == (20, 20)
    with pytest.raises(InvalidInput, match="over the limit"):
        decode_image(data, max_pixels=100)


def test_a_blank_title_states_nothing_and_the_photo_reads_it_all():
    from models.taxonomy import FILE, Taxonomy
    from models.text_pipeline import load_text, read_titles
    read = read_titles(load_text(), Taxonomy.load(FILE), ["Nike Men Black Tshirts", "", "   "])
    assert read[0].category == "Tshirts" and read[0].stated.get("gender") == "Men"
    assert max(read[0].belief, key=read[0].belief.get) == "Tshirts"
    assert read[1] == (None, {}, None) and read[2] == (None, {}, None)
    with pytest.raises(InvalidInput):
        read_titles(load_text(), Taxonomy.load(FILE), [None])      # not a title at all: still an error


def test_categories_grouped_under_their_great_category():
    """What the web page's category list shows: each category once, under the great-category the
    taxonomy's tree gives it."""
    from models.taxonomy import FILE, Taxonomy
    tax = Taxonomy.load(FILE)
    groups = tax.category_groups()
    listed = [c for cats in groups.values() for c in cats]
    assert sorted(listed) == sorted(t.split("=", 1)[1] for t in tax.category_tokens())
    assert len(set(listed)) == len(listed)
    for great, cats in groups.items():
        assert cats == sorted(cats)
        assert all(tax.tree.get(c, {}).get("masterCategory", "other") == great for c in cats)
    assert "Casual Shoes" in groups["Footwear"] and "Tshirts" in groups["Apparel"]


def test_a_category_is_named_as_a_person_spells_it():
    """Case, spaces, punctuation and a plural's s do not count; near misses get suggestions; a name
    that fits two categories, or none, is an error and never a guess."""
    from models.taxonomy import FILE, Taxonomy, resolve_category
    tax = Taxonomy.load(FILE)
    for said, meant in (("Tshirts", "Tshirts"), ("t-shirts", "Tshirts"), ("T shirt", "Tshirts"),
                        (" trousers ", "Trousers"), ("articleType=Jeans", "Jeans"), ("casual shoes", "Casual Shoes"),
                        ("CASUALSHOES", "Casual Shoes"), ("watch", "Watches"), ("flip-flop", "Flip Flops")):
        assert tax.check_category(said) == f"articleType={meant}", said
    for said, hint in (("shoes", "'Casual Shoes' or 'Formal Shoes'"), ("Jeens", "'Jeans'"), ("bag", "'Handbags'")):
        with pytest.raises(InvalidInput, match=f"did you mean .*{hint}"):
            tax.check_category(said)
    for nothing in ("Spaceships", "", "=", "gender=Men", "s"):
        with pytest.raises(InvalidInput, match="unknown category"):
            tax.check_category(nothing)
    with pytest.raises(InvalidInput, match="did you mean 'T-shirts' or 'Tshirts'"):     # two fit: ask, never pick
        resolve_category("t shirts", ["Tshirts", "T-shirts", "Belts"])
    assert resolve_category("T-shirts", ["Tshirts", "T-shirts"]) == "T-shirts"          # as spelt: that one
    assert resolve_category(" ＪＥＡＮＳ ", ["Jeans"]) == "Jeans"
    assert resolve_category("원피스", ["청바지", "원피스"]) == "원피스"           # another catalog's script
    with pytest.raises(InvalidInput, match="GET /categories lists them"):
        resolve_category("Spaceships", ["Belts"], listed_at="GET /categories")
    said = set()         # the same message whatever order the names come in (the REST front holds a set)
    for names in (["Casual Shoes", "Formal Shoes", "Belts", "Sports Shoes"], ["Sports Shoes", "Belts",
                                                                             "Formal Shoes", "Casual Shoes"]):
        with pytest.raises(InvalidInput) as got:
            resolve_category("shoe", names)
        said.add(str(got.value))
    assert said == {"unknown category 'shoe'; did you mean 'Casual Shoes' or 'Formal Shoes' or 'Sports Shoes'? "
                    "known: Belts, Casual Shoes, Formal Shoes, Sports Shoes"}


def test_a_filter_token_is_read_as_the_index_spells_it():
    """'gender=men' filters as 'gender=Men'; a field or value the vocabulary does not know (a shop's
    own token) or could read two ways is kept as given."""
    import random
    from models.taxonomy import FILE, Taxonomy
    tax = Taxonomy.load(FILE)
    for said, meant in (("gender=men", "gender=Men"), ("Gender=WOMEN", "gender=Women"),
                        ("colour=navy blue", "baseColour=Navy Blue"), ("color=Red", "baseColour=Red"),
                        ("category=t-shirt", "articleType=Tshirts"),
                        ("articletype=casual shoe", "articleType=Casual Shoes"),
                        ("subcategory=topwear", "subCategory=Topwear"), ("season=summer", "season=Summer"),
                        ("brand=Nike", "brand=Nike"), ("gender=Martian", "gender=Martian"),
                        ("category=shoes", "articleType=shoes"), ("gender=Men", "gender=Men")):
        assert tax.resolve_token(said) == meant, said
    # every token of the vocabulary, in a person's spelling, reads back as itself unless two fold alike
    rng = random.Random(3)
    for token in tax.tokens[3:]:
        field, value = token.split("=", 1)
        mangled = "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in field + "=" + value)
        folded_alike = [v for v in tax.values[field]
                        if re.sub(r"[\W_]", "", v.casefold()) == re.sub(r"[\W_]", "", value.casefold())]
        want = token if len(folded_alike) == 1 else f"{field}={mangled.split('=', 1)[1]}"
        assert tax.resolve_token(mangled) == want, mangled
    assert tax.close_tokens("articleType=shoes")[:2] == ["articleType=Casual Shoes", "articleType=Formal Shoes"]
    assert tax.close_tokens("baseColour=Bleu")[0] == "baseColour=Blue" and tax.close_tokens("gender=Men") == []


# Where the stored pixels' first row and first column lie once the photo is shown (EXIF 2.3,
# tag 0x0112): the corner that holds stored pixel (0, 0), and the one holding the first row's
# last pixel. Orientations 5-8 also swap width and height.
SHOWN_CORNERS = {1: ("top-left", "top-right"), 2: ("top-right", "top-left"),
                 3: ("bottom-right", "bottom-left"), 4: ("bottom-left", "bottom-right"),
                 5: ("top-left", "bottom-left"), 6: ("top-right", "bottom-right"),
                 7: ("bottom-right", "top-right"), 8: ("bottom-left", "top-left")}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_photos_are_read_upright_as_their_exif_orientation_says(tmp_path, orientation):
    stored = np.zeros((24, 40, 3), np.uint8)            # 40 wide, 24 high as stored
    stored[0, 0] = (255, 0, 0)                          # red: the first row's first pixel
    stored[0, -1] = (0, 255, 0)                         # green: the first row's last pixel
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.png"                       # PNG: lossless, so single pixels survive
    Image.fromarray(stored).save(path, exif=exif)
    shown = np.asarray(decode_image(path))
    assert shown.shape[:2] == ((40, 24) if orientation >= 5 else (24, 40))
    h, w = shown.shape[:2]
    corner = {"top-left": (0, 0), "top-right": (0, w - 1), "bottom-left": (h - 1, 0), "bottom-right": (h - 1, w - 1)}
    red, green = SHOWN_CORNERS[orientation]
    assert tuple(shown[corner[red]]) == (255, 0, 0)
    assert tuple(shown[corner[green]]) == (0, 255, 0)
    assert np.count_nonzero(shown.any(axis=2)) == 2
    assert decode_image(path.read_bytes()).tobytes() == shown.tobytes()      # bytes as a path


@pytest.mark.parametrize("kind", ["RGBA png", "LA png", "RGBA webp", "P png", "P gif", "half-transparent png"])
def test_a_transparent_backdrop_is_read_as_white_not_as_the_black_stored_under_it(tmp_path, kind):
    """A shop's cutout: the product opaque, the backdrop transparent, stored as black. A browser shows
    it on the page's white; dropping the alpha would put the product on black."""
    mode, fmt = kind.split()[0], kind.split()[-1]
    rgba = np.zeros((40, 50, 4), np.uint8)                   # transparent black
    rgba[10:30, 15:35] = (200, 30, 30, 255)
    if kind.startswith("half"):
        rgba[:, :5] = (0, 0, 0, 128)                         # half see-through black: grey on white
    img = Image.fromarray(rgba, "RGBA")
    path = tmp_path / f"cutout.{fmt}"
    if mode == "P":
        img.quantize().save(path, transparency=0) if fmt == "gif" else img.quantize().save(path)
    elif mode == "LA":
        img.convert("LA").save(path)
    else:
        img.save(path, lossless=True) if fmt == "webp" else img.save(path)
    x = np.asarray(decode_image(path)).astype(int)
    assert (x[:, 40:] == 255).all() and (x[:3, 5:] == 255).all()          # the backdrop
    product = (200, 30, 30) if mode != "LA" else (81, 81, 81)            # LA keeps only its grey
    assert np.abs(x[20, 25] - product).max() <= 2
    if kind.startswith("half"):
        assert np.abs(x[:, :5] - 127).max() <= 1
    # an opaque photo with an alpha channel is read as it is, its pixels untouched
    opaque = rgba.copy()
    opaque[..., 3] = 255
    Image.fromarray(opaque, "RGBA").save(tmp_path / "opaque.png")
    assert np.array_equal(np.asarray(decode_image(tmp_path / "opaque.png")), opaque[..., :3])


@pytest.mark.parametrize("kind", ["16-bit png", "16-bit tiff", "float tiff 0..1", "float tiff 0..255"])
def test_a_grey_photo_of_more_than_8_bits_is_scaled_not_clipped(tmp_path, kind):
    """Pillow's own conversion clips: a 16-bit grey photo came out nearly all white, a 0..1 float one black."""
    ramp = np.linspace(0, 1, 64 * 48).reshape(48, 64)
    if kind.startswith("16-bit"):
        stored = Image.fromarray(np.round(ramp * 65535).astype(np.uint16))
    else:
        stored = Image.fromarray((ramp * (1 if kind.endswith("0..1") else 255)).astype(np.float32))
    path = tmp_path / ("photo.png" if kind.endswith("png") else "photo.tiff")
    stored.save(path)
    x = np.asarray(decode_image(path)).astype(int)
    assert (x[..., 0] == x[..., 1]).all() and (x[..., 1] == x[..., 2]).all()       # grey
    assert np.abs(x[..., 0] - ramp * 255).max() <= 1


def test_an_iphones_heic_photo_is_read():
    """HEIC, the format an iPhone saves: left half red, right half blue, 64 x 48 (made once with
    pillow-heif's encoder; the project only decodes)."""
    from pathlib import Path
    photo = Path(__file__).parent / "photos" / "two_halves.heic"
    for source in (photo, photo.read_bytes()):
        pixels = np.asarray(decode_image(source)).astype(int)
        assert pixels.shape == (48, 64, 3)
        assert np.abs(pixels[:, :28] - (220, 30, 30)).max() < 30      # lossy: near, not equal
        assert np.abs(pixels[:, 36:] - (30, 30, 220)).max() < 30


def test_a_damaged_exif_block_never_fails_otherwise_than_invalid_input():
    """Random bytes of a phone photo's EXIF block changed: the photo is read, or refused with
    InvalidInput (a 4xx at the API), never another exception (a 500)."""
    import io
    import random
    import warnings
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "Phone"
    buf = io.BytesIO()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(buf, format="JPEG", exif=exif)
    good = buf.getvalue()
    start = good.index(b"Exif") + 6
    rng = random.Random(0)
    read = 0
    for _ in range(3000):
        damaged = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            damaged[rng.randrange(start, start + 60)] = rng.randrange(256)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # Pillow warns of corrupt EXIF
            try:
                read += decode_image(bytes(damaged)).size in ((20, 30), (30, 20))
            except InvalidInput:
                pass
    assert read > 1000                              # most damage leaves a readable photo


def test_a_damaged_heic_photo_is_invalid_input_never_another_exception():
    """The HEIC decoder (libheif) raises RuntimeError, EOFError or SyntaxError on some damage;
    each must reach the user as InvalidInput, a 4xx, like any unreadable photo."""
    import random
    import warnings
    from pathlib import Path
    good = (Path(__file__).parent / "photos" / "two_halves.heic").read_bytes()
    rng = random.Random(1)
    outcomes = {"read": 0, "refused": 0}
    for attempt in range(2000):
        damaged = bytearray(good)
        if attempt % 3 == 0:
            damaged = damaged[:rng.randrange(len(damaged))]
        else:
            for _ in range(rng.randint(1, 4)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                decode_image(bytes(damaged))
                outcomes["read"] += 1
            except InvalidInput:
                outcomes["refused"] += 1
    assert outcomes["read"] > 100 and outcomes["refused"] > 1000


def test_a_photo_decoded_for_a_thumbnail_is_smaller_but_never_below_the_size_asked():
    """`at_least`: a JPEG decoded at a reduced scale whose long side stays >= the size asked (what
    a thumbnail of that size needs), and a thumbnail made from it looks like one made from the
    full decode (the slow oracle)."""
    import io
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).resize((1600, 1200), Image.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=90)
    for side in (100, 200, 320, 700, 2000):
        fast = decode_image(buf.getvalue(), at_least=side)
        assert max(fast.size) >= min(side, 1600) and fast.size[0] * 3 == fast.size[1] * 4
        assert fast.size[0] <= 1600 and (side > 800 or fast.size[0] < 1600)   # 1/2 scale once 800 >= side
        assert side > 400 or fast.size[0] < 800                               # 1/4 once 400 >= side
        full = decode_image(buf.getvalue())
        fast.thumbnail((side, side))
        full.thumbnail((side, side))
        assert fast.size == full.size
        assert np.abs(np.asarray(fast).astype(int) - np.asarray(full).astype(int)).mean() < 4
