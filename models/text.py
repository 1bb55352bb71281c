"""The seller's intention from the product title: title -> fashion-category (+ gender, colour).

A fastText-style model: hashed word uni/bi-grams and character 3..5-grams, an
EmbeddingBag (mean) into a small vector, one linear layer to the categories. It
answers "unknown" below a confidence threshold, and for a title with no word its
training titles had: a hash bucket no training gram reached keeps its random start,
and "hello" or "." read through such buckets came out a confident T-shirt or jacket.
Those buckets are left out of every reading and out of the saved file. Gender and
colour come from the words of the title when it states them (longest colour name
first, so "Navy Blue" wins over "Blue").
"""
from __future__ import annotations

import re
import unicodedata
import zlib
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from shards.errors import InvalidInput

from .weights import read_weights

WORD = re.compile(r"[^\W_]+")     # letters and digits of any script: a Korean or French shop's titles have words too
GENDER_WORDS = {"men": "Men", "mens": "Men", "man": "Men", "women": "Women", "womens": "Women",
                "woman": "Women", "boys": "Boys", "boy": "Boys", "girls": "Girls", "girl": "Girls",
                "unisex": "Unisex"}
MAX_TITLE = 1000


@dataclass(frozen=True)
class TextConfig:
    buckets: int = 1 << 17
    dim: int = 32
    min_n: int = 3
    max_n: int = 5
    threshold: float = 0.5


def words_of(title: str) -> list[str]:
    """Full-width letters as their plain forms, case folded (for the English titles the model learnt
    from, the lower-cased runs of a-z and 0-9)."""
    return WORD.findall(unicodedata.normalize("NFKC", title).casefold())


def _bucket(gram: str, cfg: TextConfig) -> int:
    return zlib.crc32(gram.encode()) % cfg.buckets


def word_buckets(title: str, cfg: TextConfig) -> list[int]:
    """The title's words, as buckets."""
    return [_bucket(w, cfg) for w in words_of(title)]


def features(title: str, cfg: TextConfig) -> list[int]:
    words = words_of(title)
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    for w in words:
        w = f"<{w}>"
        grams += [w[i: i + n] for n in range(cfg.min_n, cfg.max_n + 1) for i in range(len(w) - n + 1)]
    return [_bucket(g, cfg) for g in grams] or [0]


class TitleClassifier(nn.Module):
    def __init__(self, cfg: TextConfig, classes: list[str], colours: list[str]):
        super().__init__()
        self.cfg, self.classes, self.colours = cfg, list(classes), sorted(colours, key=len, reverse=True)
        self.embed = nn.EmbeddingBag(cfg.buckets, cfg.dim, mode="mean")
        self.out = nn.Linear(cfg.dim, len(classes))
        # which buckets training reached (all of them or none, and a word's, until `learn_vocabulary`)
        self.seen: torch.Tensor | None = None
        self.words: torch.Tensor | None = None
        self.prior: torch.Tensor | None = None    # how common each category was among the training titles

    def learn_vocabulary(self, titles: list[str]) -> None:
        """Mark the buckets the training titles reach (any gram, and whole words)."""
        self.seen = torch.zeros(self.cfg.buckets, dtype=torch.bool)
        self.seen[[i for t in titles for i in features(t, self.cfg)]] = True
        self.words = torch.zeros(self.cfg.buckets, dtype=torch.bool)
        self.words[[i for t in titles for i in word_buckets(t, self.cfg)]] = True

    def knows_a_word(self, title: str) -> bool:
        return self.words is None or bool(self.words[word_buckets(title, self.cfg)].any())

    def batch(self, titles: list[str]):
        feats = [features(t, self.cfg) for t in titles]
        if self.seen is not None:          # an unseen bucket holds noise; a bag left empty reads as zeros
            seen = self.seen.numpy()
            feats = [[i for i in f if seen[i]] for f in feats]
        offsets = torch.tensor([0] + [len(f) for f in feats[:-1]], dtype=torch.long).cumsum(0)
        return torch.tensor([i for f in feats for i in f], dtype=torch.long), offsets

    def forward(self, titles: list[str]) -> torch.Tensor:
        idx, offsets = self.batch(titles)
        return self.out(self.embed(idx, offsets))  # N x classes

    @torch.no_grad()
    def predict(self, titles: list[str]) -> list[dict]:
        """Per title: category (or "unknown"), confidence, gender / colour if stated, and its belief
        over every category: p(category | title) / p(category), summing to 1 (None for a title with
        no known word). Times the photo's own p(category | photo) it gives the category given both
        (both models learnt the same catalog's prior, divided out once here): models/attributes.py."""
        for t in titles:
            if not isinstance(t, str) or not t.strip():
                raise InvalidInput(f"a title must be a non-empty string, got {t!r}")
            if len(t) > MAX_TITLE:
                raise InvalidInput(f"a title is at most {MAX_TITLE} characters")
        probs = F.softmax(self(titles), dim=1)
        conf, best = probs.max(dim=1)
        belief = probs / self.prior if self.prior is not None else probs
        belief = (belief / belief.sum(dim=1, keepdim=True)).tolist()
        out = []
        for t, c, b, row in zip(titles, conf.tolist(), best.tolist(), belief):
            words = words_of(t)
            gender = next((GENDER_WORDS[w] for w in words if w in GENDER_WORDS), None)
            low = f" {' '.join(words)} "
            colour = next((c_ for c_ in self.colours if f" {c_.lower()} " in low), None)
            known = self.knows_a_word(t)   # "hello", ".", an SKU: nothing the model learnt; the photo decides
            c = c if known else 0.0
            out.append({"category": self.classes[b] if c >= self.cfg.threshold else "unknown",
                        "confidence": c, "gender": gender, "colour": colour,
                        "belief": dict(zip(self.classes, row)) if known else None})
        return out

    def save(self, path) -> None:
        """Only the buckets training reached are written (the shipped model: a fifth of them, 1.6 MB of 8.4)."""
        state = {k: v.half() for k, v in self.state_dict().items()}
        if self.seen is not None:
            rows = self.seen.nonzero().flatten()
            state["embed.weight"] = state["embed.weight"][rows]
            state["seen_rows"] = rows.int()
            state["word_rows"] = self.words.nonzero().flatten().int()
        torch.save({"config": asdict(self.cfg), "classes": self.classes, "colours": self.colours,
                    "state": state, "prior": None if self.prior is None else self.prior.tolist()}, path)

    @classmethod
    def load(cls, path) -> "TitleClassifier":
        ck = read_weights(path, "title classifier", ("config", "classes", "colours", "state"))
        m = cls(TextConfig(**ck["config"]), ck["classes"], ck["colours"])
        state = {k: v.float() if v.is_floating_point() else v for k, v in ck["state"].items()}
        try:
            if "seen_rows" in state:       # files written since the vocabulary was kept (older: every bucket)
                rows, words = state.pop("seen_rows").long(), state.pop("word_rows").long()
                table = torch.zeros(m.cfg.buckets, m.cfg.dim)
                table[rows] = state["embed.weight"]
                state["embed.weight"] = table
                m.seen = torch.zeros(m.cfg.buckets, dtype=torch.bool)
                m.seen[rows] = True
                m.words = torch.zeros(m.cfg.buckets, dtype=torch.bool)
                m.words[words] = True
            m.load_state_dict(state)
            if ck.get("prior") is not None:
                m.prior = torch.tensor(ck["prior"], dtype=torch.float32)
                if m.prior.shape != (len(m.classes),) or not bool((m.prior > 0).all()):
                    raise RuntimeError(f"prior of shape {tuple(m.prior.shape)} for {len(m.classes)} classes")
        except (RuntimeError, IndexError) as exc:
            raise InvalidInput(f"{path} holds a damaged title classifier ({str(exc)[:200]})") from None
        return m.eval()


def train_text(titles: list[str], labels: list[str], classes: list[str], colours: list[str],
               cfg: TextConfig = TextConfig(), epochs: int = 15, seed: int = 0, log=print,
               prefixes: tuple[int, ...] = (1, 2)) -> TitleClassifier:
    """`prefixes`: each title also teaches its first 1 and 2 words, labelled the same. Trained on
    whole titles only, the model read a title cut to its brand ("Nike", "Levis 501") as one
    category at up to 0.97 and was wrong two times in three (models/RESULTS.md); now a short
    title reads as what the brand sells, and the photo settles it."""
    torch.manual_seed(seed)
    model = TitleClassifier(cfg, classes, colours)
    counts = torch.ones(len(classes))
    for lab in labels:
        counts[classes.index(lab)] += 1
    model.prior = counts / counts.sum()
    short = [(" ".join(t.split()[:k]), lab) for t, lab in zip(titles, labels) for k in prefixes
             if len(t.split()) > k]
    titles, labels = list(titles) + [t for t, _ in short], list(labels) + [lab for _, lab in short]
    model.learn_vocabulary(titles)
    y = torch.tensor([classes.index(lab) for lab in labels])
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    n = len(titles)
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
        total = 0.0
        for i in range(0, n, 128):
            b = perm[i: i + 128].tolist()
            loss = F.cross_entropy(model([titles[j] for j in b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        log(f"text epoch {epoch + 1}/{epochs} loss {total / n:.4f}")
    return model.eval()
