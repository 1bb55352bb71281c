"""The learnt projection: folding W into the code book is exact, and training separates instances."""
import numpy as np

from models.features import CodeBook
from models.instance_projection import folded_codebook, train_projection


def test_folded_codebook_encodes_like_the_projection_then_its_own_codebook():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((300, 40))
    train = np.arange(200)
    w = rng.standard_normal((40, 24))
    inner = CodeBook.fit(feats[train] @ w, 64)
    folded = folded_codebook(feats, train, w, 64)
    a, b = inner.project(feats @ w), folded.project(feats)
    assert np.allclose(a, b, atol=1e-3)
    clear = np.abs(a) > 1e-2    # away from a threshold, float32 rounding cannot flip a bit
    assert ((a > 0) == (b > 0))[clear].all()


def _nn_recall(clean, views, src, w):
    c = clean @ w
    v = views @ w
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return float(np.mean((v @ c.T).argmax(axis=1) == src))


def test_training_finds_the_item_behind_a_nuisance_that_pca_keeps():
    """Items differ in 8 quiet dimensions; views add loud noise in 8 others, which PCA prefers."""
    rng = np.random.default_rng(1)
    n, d = 200, 16
    clean = np.zeros((n, d))
    clean[:, :8] = rng.standard_normal((n, 8))
    clean[:, 8:] = 3.0 * rng.standard_normal((n, 8))       # catalog-wide variation, shared by views
    src = np.repeat(np.arange(n), 2)
    views = clean[src].copy()
    views[:, 8:] += 3.0 * rng.standard_normal((len(src), 8))  # the nuisance: a new photo, new values
    labels = np.zeros(n)
    train = np.arange(n)
    pca = np.linalg.svd(clean - clean.mean(0), full_matrices=False)[2][:8].T
    w = train_projection(clean, train, views, src, labels, out_dim=8, epochs=30, category_weight=0.0,
                         batch=128, lr=1e-2, log=lambda s: None)
    before, after = _nn_recall(clean, views, src, pca), _nn_recall(clean, views, src, w)
    assert after > before + 0.3, (before, after)
