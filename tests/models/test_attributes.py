"""The CNN-LSTM attribute model at a tiny configuration."""
import io

import pytest
import torch

from models.attributes import AttributeConfig, AttributeModel, EncoderConfig
from models.data import Product
from models.taxonomy import Taxonomy
from models.train_attributes import encode_products
from shards.errors import InvalidInput

TINY = AttributeConfig(encoder=EncoderConfig(kind="resception", width=0.0625, image_size=80, pretrained=False),
                       embed=16, hidden=32)


def tiny_taxonomy():
    prods = []
    for i in range(40):
        shirt = i % 2 == 0
        prods.append(Product(id=str(i), title="", image=None, fields={
            "masterCategory": "Apparel" if shirt else "Footwear",
            "articleType": "Shirts" if shirt else "Casual Shoes",
            "gender": "Men" if i % 4 < 2 else "Women",
            "subCategory": "Topwear" if shirt else "Shoes",
            "baseColour": ["Blue", "Black"][i % 3 == 0], "season": "Fall", "usage": "Casual"}))
    return Taxonomy.build(prods, min_count=2), prods


def test_guided_generation_emits_the_forced_category():
    tax, _ = tiny_taxonomy()
    torch.manual_seed(0)
    model = AttributeModel(TINY, tax).eval()
    x = torch.randn(3, 3, 80, 80)
    for beam in (1, 3):
        out = model.generate(x, beam=beam, categories=["Casual Shoes", "Shirts", None])
        tokens = [[t for t, _ in seq] for seq in out]
        assert "articleType=Casual Shoes" in tokens[0] and "masterCategory=Footwear" in tokens[0]
        assert "articleType=Shirts" in tokens[1] and "masterCategory=Apparel" in tokens[1]
        for seq in tokens:   # field order holds and each field at most once
            fields = [tax.fields.index(t.split("=")[0]) for t in seq]
            assert fields == sorted(set(fields))
        assert all(0.0 <= p <= 1.0 for seq in out for _, p in seq)


def test_a_photos_category_probabilities_against_teacher_forcing_and_a_titles_belief_weighed_with_them():
    """A catalog item's category is the one its title's belief and its photo together make likeliest
    (a title cut to its brand no longer forces the brand's usual category on a photo of another)."""
    import torch.nn.functional as F

    from models.taxonomy import BOS
    tax, _ = tiny_taxonomy()
    torch.manual_seed(0)
    model = AttributeModel(TINY, tax).eval()
    x = torch.randn(4, 3, 80, 80)
    cats = tax.category_tokens()
    names = [c.split("=", 1)[1] for c in cats]
    with torch.no_grad():
        f, state = model.encode(x)
        fast = model.category_probs(f, state)
        slow = torch.zeros_like(fast)       # the oracle: every (great-category, category) prefix, teacher-forced
        for j, c in enumerate(cats):
            for g in (t for t in tax.tokens if t.startswith("masterCategory=")):
                logits, _ = model(x, torch.tensor([[BOS, tax.index[g], tax.index[c]]] * 4))
                p = F.softmax(logits, dim=-1)
                slow[:, j] += p[:, 0, tax.index[g]] * p[:, 1, tax.index[c]]
        assert torch.allclose(fast, slow, atol=1e-6)
        sure = {n: float(n == "Casual Shoes") for n in names}       # a title that names it
        flat = {n: 1 / len(names) for n in names}                    # a title that says nothing of it
        assert model.category_given_title(f, state, [sure, flat, None, sure]) == [
            "Casual Shoes", names[int(slow[1].argmax())], None, "Casual Shoes"]
        gen = torch.Generator().manual_seed(1)
        for _ in range(20):
            beliefs = [dict(zip(names, torch.rand(len(names), generator=gen).tolist())) for _ in range(4)]
            chosen = model.category_given_title(f, state, beliefs)
            best = [names[int((torch.tensor([b[n] for n in names]) * slow[i]).argmax())] for i, b in enumerate(beliefs)]
            assert chosen == best
        # generation follows the choice; no belief leaves a category as given, or the photo's own
        out = model.generate(x, beam=3, categories=[None, None, "Shirts", None], beliefs=[sure, None, None, None])
        assert "articleType=Casual Shoes" in [t for t, _ in out[0]] and "articleType=Shirts" in [t for t, _ in out[2]]
        assert out[1:] == model.generate(x[1:], beam=3, categories=[None, "Shirts", None])


def test_runners_up_are_other_values_of_generated_fields():
    tax, _ = tiny_taxonomy()
    torch.manual_seed(0)
    model = AttributeModel(TINY, tax).eval()   # untrained: its distributions are flat, so runners-up abound
    x = torch.randn(3, 3, 80, 80)
    cats = ["Casual Shoes", None, "Shirts"]
    for beam in (1, 3):
        full = model.generate_with_alternatives(x, beam=beam, categories=cats, min_p=0.02)
        assert [seq for seq, _ in full] == model.generate(x, beam=beam, categories=cats)
        assert all(alts == [] for _, alts in model.generate_with_alternatives(x, beam=beam, categories=cats))
        assert any(alts for _, alts in full)
        for (seq, alts), cat in zip(full, cats):
            read = {t.split("=")[0]: t for t, _ in seq}
            forced = {"articleType", "masterCategory"} if cat else set()
            for t, p in alts:
                field = t.split("=")[0]
                assert field in read and t != read[field] and field not in forced and 0.02 <= p <= 1


def test_what_a_title_states_is_forced_and_keeps_the_photo_s_runners_up():
    """A catalog item's gender and colour from its title are emitted as stated, with or without its category;
    a value the taxonomy lacks is left to the model; the photo's other colours stay as runners-up."""
    tax, _ = tiny_taxonomy()
    torch.manual_seed(0)
    model = AttributeModel(TINY, tax).eval()
    x = torch.randn(4, 3, 80, 80)
    plain = model.generate(x, beam=3)
    for want in ("Black", "Blue"):
        stated = [{"gender": "Women", "baseColour": want}, {"baseColour": want}, {"baseColour": "Mauve"}, None]
        cats = ["Shirts", None, "Shirts", None]
        for beam in (1, 3):
            out = model.generate_with_alternatives(x, beam=beam, categories=cats, stated=stated, min_p=0.02)
            tokens = [[t for t, _ in seq] for seq, _ in out]
            assert {"gender=Women", f"baseColour={want}", "articleType=Shirts"} <= set(tokens[0])
            assert f"baseColour={want}" in tokens[1]
            alone = model.generate(x[2:3], beam=beam, categories=["Shirts"])[0]
            colour = [t for t in tokens[2] if t.startswith("baseColour=")]
            assert colour == [t for t, _ in alone if t.startswith("baseColour=")]
            for seq in tokens:
                fields = [tax.fields.index(t.split("=")[0]) for t in seq]
                assert fields == sorted(set(fields))
            other = "Blue" if want == "Black" else "Black"
            assert ("baseColour=" + other) in [t for t, _ in out[1][1]]     # untrained: flat, so the other is >= 0.02
            assert not any(t.split("=")[0] in ("articleType", "masterCategory") for t, _ in out[0][1])
    assert model.generate(x, beam=3, stated=[None] * 4) == plain


def test_unknown_category_is_a_clear_error():
    tax, _ = tiny_taxonomy()
    model = AttributeModel(TINY, tax).eval()
    with pytest.raises(InvalidInput, match="unknown category"):
        model.generate(torch.randn(1, 3, 80, 80), categories=["Spaceships"])


def test_a_few_steps_on_eight_images_lower_the_loss():
    tax, prods = tiny_taxonomy()
    torch.manual_seed(0)
    model = AttributeModel(TINY, tax)
    seqs, br, _ = encode_products(prods[:8], tax)
    x = torch.randn(8, 3, 80, 80)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    first = None
    for _ in range(25):
        _, losses = model(x, seqs, br)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        first = first if first is not None else float(losses["nll"].detach())
    assert float(losses["nll"]) < 0.7 * first
    # gradients reach the encoder
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def test_checkpoint_round_trip_reproduces_outputs():
    tax, prods = tiny_taxonomy()
    torch.manual_seed(1)
    model = AttributeModel(TINY, tax).eval()
    buf = io.BytesIO()
    torch.save(model.checkpoint(), buf)
    buf.seek(0)
    again = AttributeModel.from_checkpoint(torch.load(buf, weights_only=False))
    x = torch.randn(2, 3, 80, 80)
    seqs, _, _ = encode_products(prods[:2], tax)
    assert torch.equal(model(x, seqs)[0], again(x, seqs)[0])
    assert model.generate(x, beam=2) == again.generate(x, beam=2)


def test_wrong_image_shape_is_an_error():
    tax, _ = tiny_taxonomy()
    model = AttributeModel(TINY, tax).eval()
    with pytest.raises(RuntimeError):
        model.generate(torch.randn(1, 1, 80, 80))


def test_hard_views_show_their_own_product_and_are_cached(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from models import train_attributes
    streets = tmp_path / "data" / "ccp-boxes" / "images"
    streets.mkdir(parents=True)
    Image.new("RGB", (300, 400), (20, 200, 20)).save(streets / "0001.jpg")
    prods = []
    for i, colour in enumerate([(220, 20, 20), (20, 20, 220)]):
        Image.new("RGB", (60, 80), colour).save(tmp_path / f"{i}.jpg")
        prods.append(Product(id=str(i), title="", image=tmp_path / f"{i}.jpg", fields={}))
    monkeypatch.setenv("FASHION_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(train_attributes, "CACHE", tmp_path / "cache")
    views = train_attributes.hard_views(prods, 32, reps=3, name="t", log=lambda s: None)
    assert views.shape == (3, 2, 32, 32, 3) and views.dtype == np.uint8
    centre = views[:, :, 12:20, 12:20].reshape(3, 2, -1, 3).mean(axis=2)
    assert (centre[:, 0, 0] > 120).all() and (centre[:, 1, 2] > 120).all()   # each view is of its product
    assert not np.array_equal(views[0], views[1])                            # each pass corrupts anew
    assert list((tmp_path / "cache").glob("t-hard3-32-*.npy"))
    assert np.array_equal(train_attributes.hard_views(prods, 32, reps=3, name="t", log=lambda s: None), views)
    in_parallel = train_attributes.hard_views(prods, 32, reps=3, name="t2", workers=2, log=lambda s: None)
    assert np.array_equal(in_parallel, views)          # the same views however many processes make them


def test_hard_fraction_outside_zero_one_is_an_error(tmp_path):
    from models.train_attributes import train_attributes
    with pytest.raises(ValueError, match="hard"):
        train_attributes(TINY, tmp_path / "run", hard=1.5)
    assert not (tmp_path / "run").exists()


def test_random_crops_zoom_inside_the_image():
    from models.train_attributes import random_crops
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 24, 24, 3), dtype=torch.uint8)
    assert torch.equal(random_crops(x, 1 - 1e-9, gen), x)          # a full-side crop changes nothing
    # a horizontal ramp: a crop of side s spans about s of the ramp's range, all of it inside
    ramp = (torch.arange(32) * 8).to(torch.uint8)[None, None, :, None].expand(8, 32, 32, 3).contiguous()
    y = random_crops(ramp, 0.5, gen).int()
    assert y.shape == ramp.shape
    spans = (y[:, 16, -1, 0] - y[:, 16, 0, 0]).float() / 248
    assert (spans >= 0.45).all() and (spans <= 1.0).all() and (spans < 0.95).any()
    assert (y[:, :, 1:, 0] >= y[:, :, :-1, 0]).all()                # still a ramp: no flip, no wrap


def test_crop_outside_zero_one_is_an_error(tmp_path):
    from models.train_attributes import train_attributes
    with pytest.raises(ValueError, match="crop"):
        train_attributes(TINY, tmp_path / "run", crop=1.0)


def test_label_smoothing_changes_the_training_loss_not_the_reported_nll():
    from dataclasses import replace
    tax, prods = tiny_taxonomy()
    torch.manual_seed(0)
    plain = AttributeModel(TINY, tax).eval()
    smooth = AttributeModel(replace(TINY, label_smoothing=0.1), tax).eval()
    smooth.load_state_dict(plain.state_dict())
    seqs, br, _ = encode_products(prods[:4], tax)
    x = torch.randn(4, 3, 80, 80)
    _, a = plain(x, seqs, br)
    _, b = smooth(x, seqs, br)
    assert torch.allclose(a["nll"], b["nll"]) and not torch.allclose(a["loss"], b["loss"])


def test_a_folder_holding_another_run_is_refused_and_kept(tmp_path, monkeypatch):
    from models import train_attributes as ta
    monkeypatch.setattr(ta, "split_products", lambda split: [])
    (tmp_path / "run").mkdir()
    other = {"config": {"encoder": "something else"}, "state": {}}
    torch.save(other, tmp_path / "run" / "last.pt")
    saved = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(InvalidInput, match="another run"):
        ta.train_attributes(TINY, tmp_path / "run")
    assert (tmp_path / "run" / "last.pt").read_bytes() == saved


def test_the_running_mean_of_weights_is_the_mean_of_the_weights_taken():
    from models.train_attributes import WeightMean
    gen = torch.Generator().manual_seed(0)
    taken = [{"w": torch.randn(5, 3, generator=gen), "b": torch.randn(3, generator=gen).half(),
              "steps": torch.tensor(i)} for i in range(7)]
    mean = WeightMean()
    for i, t in enumerate(taken):
        mean.add(t)
        if i == 3:     # as a resumed run: the mean rebuilt from its checkpointed state
            mean = WeightMean.from_state(mean.state())
    value = mean.value()
    assert mean.count == 7
    assert torch.allclose(value["w"], torch.stack([t["w"] for t in taken]).mean(0), atol=1e-6)
    assert torch.allclose(value["b"], torch.stack([t["b"].float() for t in taken]).mean(0), atol=1e-3)
    assert int(value["steps"]) == 6            # not a weight: as last taken


def test_batch_norms_are_re_estimated_as_the_plain_mean_over_the_batches_and_frozen_ones_kept():
    from models.train_attributes import reestimate_batch_norms
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 2, 1), torch.nn.BatchNorm2d(2))
    net.train()
    net[4].eval()                                      # as a frozen layer is kept
    kept = (net[4].running_mean.clone(), net[4].running_var.clone())
    net[1].running_mean.fill_(7.0)                     # what an average of weights leaves behind
    batches = [torch.randn(6, 3, 9, 9) * (1 + i) + i for i in range(5)]
    assert reestimate_batch_norms(net, [(b,) for b in batches]) == 1
    with torch.no_grad():
        acts = [net[0](b) for b in batches]
    mean = torch.stack([a.mean(dim=(0, 2, 3)) for a in acts]).mean(0)
    var = torch.stack([a.var(dim=(0, 2, 3), unbiased=True) for a in acts]).mean(0)
    assert torch.allclose(net[1].running_mean, mean, atol=1e-5)
    assert torch.allclose(net[1].running_var, var, atol=1e-4)
    assert net[1].momentum == 0.1                      # training goes on as before
    assert torch.equal(net[4].running_mean, kept[0]) and torch.equal(net[4].running_var, kept[1])


def test_an_averaged_run_writes_the_mean_of_its_weights_and_reads_with_it(tmp_path, monkeypatch):
    from models import train_attributes as ta
    _, prods = tiny_taxonomy()
    images = torch.randint(0, 256, (40, 80, 80, 3), dtype=torch.uint8)
    by_id = {p.id: i for i, p in enumerate(prods)}
    monkeypatch.setattr(ta, "split_products", lambda split: prods[:32] if split == "train" else prods[32:])
    monkeypatch.setattr(ta, "load_images", lambda ps, size, name: images[[by_id[p.id] for p in ps]])
    taken = []
    add = ta.WeightMean.add
    monkeypatch.setattr(ta.WeightMean, "add", lambda self, w: (taken.append({k: v.clone() for k, v in w.items()}),
                                                               add(self, w))[1])
    report = ta.train_attributes(TINY, tmp_path / "run", epochs=2, batch=8, lr=1e-3, average=True,
                                 log=lambda s: None)
    assert report["checkpoint"] == str(tmp_path / "run" / "average.pt")
    assert len(taken) == 4                                       # every half epoch, 2 epochs
    averaged = AttributeModel.from_checkpoint(torch.load(report["checkpoint"], weights_only=False))
    for name, value in averaged.state_dict().items():
        if value.is_floating_point() and "running" not in name:
            assert torch.allclose(value, torch.stack([t[name] for t in taken]).mean(0), atol=1e-5), name
    assert any(not torch.allclose(v, taken[-1][k]) for k, v in averaged.state_dict().items()
               if v.is_floating_point() and "running" not in k)       # not the last weights
    assert report["average"]["averaged_weights"] == 4 and report["average"]["val_nll"] > 0
    assert len(report["history"]) == 2                           # one entry an epoch, as a plain run
    x = torch.randn(2, 3, 80, 80)
    assert len(averaged.eval().generate(x, beam=1)) == 2


def test_set_scores_against_counting_by_hand():
    from models.evaluate import set_scores
    pred = [{"articleType=Shirts", "gender=Men", "baseColour=Blue"}, {"articleType=Jeans"}, set()]
    true = [{"articleType=Shirts", "gender=Women"}, {"articleType=Jeans", "gender=Men"}, {"articleType=Belts"}]
    s = set_scores(pred, true, "articleType")
    assert s["precision"] == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert s["recall"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    assert s["exact_match"] == 0.0 and s["category_accuracy"] == pytest.approx(2 / 3)
    assert "category_accuracy" not in set_scores(pred, true)
