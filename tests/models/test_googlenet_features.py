"""The paper's extractor: GoogLeNet's inception4e + inception5b, pooled, with a catalog-trained or
ImageNet trunk carried in the features file."""
import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import googlenet

from models.attributes import normalise
from models.features import (IMAGENET_GOOGLENET_FILE, CodeBook, FeatureConfig, FeatureExtractor,
                             imagenet_googlenet_trunk, load_features, save_features)
from models.train_googlenet import IGNORE, CatalogGoogLeNet, _loss, field_labels, trunk_state
from shards.errors import InvalidInput

SIZE = 64


def _photos(n=6, seed=0):
    return torch.randint(0, 256, (n, SIZE, SIZE, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _oracle(net: nn.Module, photos) -> np.ndarray:
    """torchvision's own forward, inception4e and inception5b read by hooks, pooled and normalised."""
    seen = {}
    hooks = [getattr(net, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
             for name in ("inception4e", "inception5b")]
    with torch.no_grad():
        net.eval()(normalise(photos, "imagenet"))
    for h in hooks:
        h.remove()
    pooled = [nn.functional.normalize(seen[k].mean(dim=(2, 3)), dim=1) for k in ("inception4e", "inception5b")]
    return torch.cat(pooled, dim=1).numpy()


def _random_bn(net: nn.Module, seed=1):
    """Convolutions that carry the signal (torchvision's init is std 0.01, under which every photo reads
    alike) and batch norms with statistics other than the initial ones, so a trunk not loaded shows."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2 / m.weight[0].numel()) ** 0.5)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net


def _catalog_model():
    vocab = {"articleType": ["Shirts", "Tshirts", "Watches"], "gender": ["Men", "Women"]}
    torch.manual_seed(0)
    return _random_bn(CatalogGoogLeNet(vocab)), vocab


def test_a_catalog_trunk_gives_torchvisions_inception4e_and_5b_features(tmp_path):
    model, vocab = _catalog_model()
    torch.save({"kind": "catalog_googlenet", "vocab": vocab, "state": model.state_dict()}, tmp_path / "last.pt")
    cfg = FeatureConfig(backbone="googlenet", image_size=SIZE)
    ext = FeatureExtractor(cfg, trunk=trunk_state(tmp_path / "last.pt"))
    photos = _photos()
    got = ext(photos).numpy()
    assert got.shape == (6, 832 + 1024)
    np.testing.assert_allclose(got, _oracle(model.trunk, photos), atol=1e-5)
    # a trunk left at random weights reads something else
    assert not np.allclose(FeatureExtractor(cfg)(photos).numpy(), got, atol=1e-2)


def test_a_googlenet_features_file_carries_its_trunk(tmp_path):
    model, _ = _catalog_model()
    trunk = {k[len("trunk."):]: v for k, v in model.state_dict().items() if k.startswith("trunk.")}
    ext = FeatureExtractor(FeatureConfig(backbone="googlenet", image_size=SIZE, bits=64), trunk=trunk)
    photos = _photos(n=80)
    feats = ext(photos).numpy().astype(np.float64)
    book = CodeBook.fit(feats, 64)
    save_features(tmp_path / "features.pt", ext, book)
    loaded, loaded_book = load_features(tmp_path / "features.pt")
    assert loaded.cfg == ext.cfg
    np.testing.assert_array_equal(loaded_book.projection, book.projection)
    # the trunk is stored in half precision: the features agree to its rounding
    np.testing.assert_allclose(loaded(photos).numpy(), feats, atol=5e-3)
    stored = torch.load(tmp_path / "features.pt")["trunk"]
    assert loaded.identity() == FeatureExtractor(ext.cfg, trunk=stored).identity()
    assert loaded.identity() != ext.identity() != FeatureExtractor(ext.cfg).identity()


def test_a_googlenet_file_without_its_trunk_or_a_trunk_that_does_not_fit_is_refused(tmp_path):
    ext = FeatureExtractor(FeatureConfig(backbone="googlenet", image_size=SIZE, bits=64))
    save_features(tmp_path / "features.pt", ext, CodeBook.fit(ext(_photos(n=70)).numpy().astype(np.float64), 64))
    ck = torch.load(tmp_path / "features.pt")
    del ck["trunk"]
    torch.save(ck, tmp_path / "no-trunk.pt")
    with pytest.raises(InvalidInput, match="without the trunk"):
        load_features(tmp_path / "no-trunk.pt")
    trunk = ext.trunk_state()
    trunk["conv1.conv.weight"] = trunk["conv1.conv.weight"][:, :, :3]
    with pytest.raises(InvalidInput, match="does not fit"):
        FeatureExtractor(ext.cfg, trunk=trunk)
    with pytest.raises(InvalidInput, match="unknown backbone"):
        FeatureExtractor(FeatureConfig(backbone="vgg"))


def test_torchvisions_imagenet_weights_are_read_from_the_hub_cache_only(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(InvalidInput, match=IMAGENET_GOOGLENET_FILE):
        imagenet_googlenet_trunk()
    # a file in torchvision's format: aux heads and a 1000-way classifier beside the trunk
    torch.manual_seed(3)
    net = _random_bn(googlenet(weights=None, aux_logits=True, transform_input=True, init_weights=True))
    (tmp_path / "checkpoints").mkdir()
    torch.save(net.state_dict(), tmp_path / "checkpoints" / IMAGENET_GOOGLENET_FILE)
    trunk = imagenet_googlenet_trunk()
    assert not any(k.startswith(("aux1.", "aux2.", "fc.")) for k in trunk)
    ext = FeatureExtractor(FeatureConfig(backbone="googlenet", image_size=SIZE, transform_input=True), trunk=trunk)
    photos = _photos(seed=4)
    np.testing.assert_allclose(ext(photos).numpy(), _oracle(net, photos), atol=1e-5)


def test_field_labels_ignore_absent_and_unseen_values():
    class P:
        def __init__(self, **fields):
            self.fields = fields
    train = [P(articleType="Shirts", gender="Men"), P(articleType="Watches")]
    vocab, labels = field_labels(train)
    assert vocab["articleType"] == ["Shirts", "Watches"] and vocab["gender"] == ["Men"]
    assert labels["gender"].tolist() == [0, IGNORE]
    _, val = field_labels([P(articleType="Sarees", gender="Men")], vocab)
    assert val["articleType"].tolist() == [IGNORE] and val["gender"].tolist() == [0]


def test_a_few_steps_on_eight_photos_lower_the_catalog_googlenets_loss():
    vocab = {"articleType": ["a", "b", "c"], "baseColour": ["x", "y"]}
    torch.manual_seed(0)
    model = CatalogGoogLeNet(vocab).train()
    x = normalise(_photos(n=8, seed=5), "imagenet")
    labels = {"articleType": torch.tensor([0, 1, 2, 0, 1, 2, 0, IGNORE]), "baseColour": torch.tensor([0, 1] * 4)}
    idx = torch.arange(8)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = _loss(model(x), labels, idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_the_googlenet_extractor_folded_for_serving_reads_the_same_features():
    import copy

    from models.inference import fold_batchnorm
    model, _ = _catalog_model()
    trunk = {k[len("trunk."):]: v for k, v in model.state_dict().items() if k.startswith("trunk.")}
    ext = FeatureExtractor(FeatureConfig(backbone="googlenet", image_size=SIZE), trunk=trunk)
    folded = copy.deepcopy(ext)
    assert fold_batchnorm(folded) == sum(isinstance(m, nn.BatchNorm2d) for m in ext.modules()) > 50
    photos = _photos(seed=6)
    np.testing.assert_allclose(folded(photos).numpy(), ext(photos).numpy(), atol=1e-4)


def test_rank_of_item_is_its_place_in_a_stable_sort_by_distance():
    from models.train_features import rank_of_item
    rng = np.random.default_rng(0)
    for _ in range(200):
        d = rng.integers(0, 6, size=int(rng.integers(1, 40)))        # few values: many ties
        item = int(rng.integers(len(d)))
        assert rank_of_item(d, item) == int(np.flatnonzero(np.argsort(d, kind="stable") == item)[0])


def test_train_googlenet_saves_a_trunk_resumes_and_refuses_another_runs_folder(tmp_path, monkeypatch):
    from models import train_googlenet as tg
    from models.data import Product

    def products(split):
        n = 12 if split == "train" else 4
        return [Product(id=f"{split}{i}", title="", image=tmp_path / "none.jpg",
                        fields={"articleType": ["Shirts", "Watches"][i % 2], "gender": "Men"}) for i in range(n)]

    monkeypatch.setattr(tg, "split_products", products)
    monkeypatch.setattr(tg, "load_images", lambda ps, size, name: _photos(n=len(ps), seed=len(ps))[:, :size, :size])
    cfg = tg.GoogLeNetTrainConfig(image_size=48, epochs=1, batch=6)
    report = tg.train_googlenet(tmp_path / "run", cfg, log=lambda s: None)
    assert [h["epoch"] for h in report["history"]] == [1] and (tmp_path / "run" / "curves.png").exists()
    saved = (tmp_path / "run" / "last.pt").read_bytes()
    trunk = trunk_state(tmp_path / "run" / "last.pt")
    FeatureExtractor(FeatureConfig(backbone="googlenet", image_size=SIZE), trunk=trunk)     # fits the extractor
    # the same settings resume (nothing left to train); others are refused and the run is kept
    again = tg.train_googlenet(tmp_path / "run", cfg, log=lambda s: None)["history"]
    assert [(h["epoch"], h["train_nll"]) for h in again] == [(1, report["history"][0]["train_nll"])]
    assert set(report["history"][0]["val_accuracy"]) == {"articleType", "gender"}
    with pytest.raises(InvalidInput, match="another run"):
        tg.train_googlenet(tmp_path / "run", tg.GoogLeNetTrainConfig(image_size=48, epochs=2, batch=6))
    assert (tmp_path / "run" / "last.pt").read_bytes() == saved
