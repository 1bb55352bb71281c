"""The attribute vocabulary and its order, as data (models/assets/taxonomy.json).

Tokens are `field=value`. A product's attribute sequence lists its tokens in the
taxonomy's field order: great-category (masterCategory) first, then the
fashion-category (articleType), then the rest, so guided generation can force the
category at its position. Values seen fewer than `min_count` times in the training
split become `field=other`; empty fields are absent. A user with another catalog
builds another file (`Taxonomy.build`) and the models follow it. Which detector
classes a category may appear as is a second data file, detector_classes.json.
"""
from __future__ import annotations

import difflib
import json
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from shards.errors import InvalidInput

from .data import ASSETS, Product

FILE = ASSETS / "taxonomy.json"
FIELDS = ("masterCategory", "articleType", "gender", "subCategory", "baseColour", "season", "usage")
STATED_FIELDS = ("gender", "baseColour")      # what a seller's title states in words (models/text.py)
PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")


def _folded(name: str) -> str:
    """Letters and digits only, of any script, case folded (as the title model reads words)."""
    return re.sub(r"[\W_]", "", unicodedata.normalize("NFKC", name).casefold())


def resolve_category(raw: str, names, field: str = "articleType", listed_at: str | None = None) -> str:
    """The category a person means, as one of `names`: 'T-shirts', 'tshirts', ' Tshirts',
    'articleType=Tshirts' and 'tshirt' all name 'Tshirts'. Case, spaces and punctuation do not
    count, nor a plural's s; anything else is InvalidInput naming the closest categories, and all
    of them (or where they are `listed_at`)."""
    text = raw.strip()
    if text.startswith(field + "="):
        text = text.split("=", 1)[1]
    names = sorted(names)       # the same suggestions in the same order, whatever order `names` came in
    found = _spelt_as(text, names)
    if len(found) == 1:
        return found[0]
    key = _folded(text)
    close = found or ([n for n in names if len(key) >= 3 and key.rstrip("s") in _folded(n)] or
                      difflib.get_close_matches(text, names, n=3, cutoff=0.6))[:5]
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    known = f"{listed_at} lists them" if listed_at else f"known: {', '.join(names)}"
    raise InvalidInput(f"unknown category {raw!r}; {hint}{known}")


def _spelt_as(text: str, names: list[str]) -> list[str]:
    """The names `text` spells, as a person writes them: itself, else those equal to it when
    case, spaces, punctuation and a plural's s do not count (more than one: it is ambiguous)."""
    if text in names:
        return [text]
    key = _folded(text)
    if not key:
        return []
    by_key: dict[str, list[str]] = {}
    for name in names:
        by_key.setdefault(_folded(name), []).append(name)
    found = by_key.get(key) or by_key.get(key + "s") or by_key.get(key + "es") or \
        [n for k, ns in by_key.items() if k.rstrip("s") == key.rstrip("s") for n in ns]
    return sorted(set(found))


# what people call a field: a filter's "colour=red" is a baseColour, "category=shoes" an articleType
FIELD_ALIASES = {"colour": "baseColour", "color": "baseColour", "category": "articleType"}


@dataclass
class Taxonomy:
    fields: tuple[str, ...]
    values: dict[str, list[str]]                 # field -> kept values (sorted)
    tree: dict[str, dict[str, str]]              # articleType -> {masterCategory, subCategory}
    min_count: int = 5
    great_field: str = "masterCategory"
    category_field: str = "articleType"

    def __post_init__(self):
        self.tokens = list(SPECIALS) + [f"{f}={v}" for f in self.fields for v in self.values[f]]
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.field_of = [-1] * len(SPECIALS) + [i for i, f in enumerate(self.fields) for _ in self.values[f]]

    @classmethod
    def build(cls, products: list[Product], fields=FIELDS, min_count: int = 5) -> "Taxonomy":
        counts = {f: Counter(p.fields[f] for p in products if f in p.fields) for f in fields}
        values = {f: sorted([v for v, n in counts[f].items() if n >= min_count]
                            + (["other"] if any(n < min_count for n in counts[f].values()) else []))
                  for f in fields}
        votes = defaultdict(lambda: defaultdict(Counter))
        for p in products:
            if "articleType" in p.fields:
                for f in ("masterCategory", "subCategory"):
                    if f in p.fields:
                        votes[p.fields["articleType"]][f][p.fields[f]] += 1
        tree = {t: {f: c.most_common(1)[0][0] for f, c in fs.items()} for t, fs in votes.items()}
        return cls(fields=tuple(fields), values=values, tree=tree, min_count=min_count)

    # ------------------------------------------------------------ tokens
    def token(self, f: str, value: str) -> str:
        return f"{f}={value}" if value in self.values[f] else f"{f}=other"

    def sequence(self, product_fields: dict) -> list[str]:
        """The product's tokens in field order."""
        return [self.token(f, product_fields[f]) for f in self.fields if f in product_fields]

    def encode(self, tokens: list[str]) -> list[int]:
        return [BOS] + [self.index[t] for t in tokens] + [EOS]

    def category_tokens(self) -> list[str]:
        return [t for t in self.tokens if t.startswith(self.category_field + "=")]

    def category_groups(self) -> dict[str, list[str]]:
        """The categories under their great-category (from the tree; "other" where it names none), for a
        user choosing one: {"Accessories": ["Backpacks", ...], "Apparel": [...], ...}, each sorted."""
        groups: dict[str, list[str]] = {}
        for token in self.category_tokens():
            category = token.split("=", 1)[1]
            groups.setdefault(self.tree.get(category, {}).get(self.great_field, "other"), []).append(category)
        return {great: sorted(groups[great]) for great in sorted(groups)}

    def check_category(self, category: str) -> str:
        """'Shirts', 'shirts', 'articleType=Shirts' -> 'articleType=Shirts'; unknown -> InvalidInput."""
        value = resolve_category(category, [t.split("=", 1)[1] for t in self.category_tokens()],
                                 field=self.category_field)
        return f"{self.category_field}={value}"

    def resolve_token(self, token: str) -> str:
        """A filter's or a given attribute's token as the index spells it: 'gender=men' is
        'gender=Men', 'colour=navy blue' 'baseColour=Navy Blue', 'articletype=tshirt'
        'articleType=Tshirts'. A field or a value this vocabulary does not know, or that it
        could read two ways, is kept as given: a shop may index tokens of its own."""
        field, sep, value = token.partition("=")
        if not sep:
            return token
        fields = _spelt_as(field.strip(), list(self.fields))
        if len(fields) != 1:
            fields = [FIELD_ALIASES[_folded(field)]] if FIELD_ALIASES.get(_folded(field)) in self.fields else []
        if not fields:
            return token
        values = _spelt_as(value.strip(), self.values[fields[0]])
        return f"{fields[0]}={values[0] if len(values) == 1 else value.strip()}"

    def resolve_tokens(self, tokens) -> tuple[str, ...]:
        """`resolve_token` of each, each once; a malformed token (not 'field=value') is InvalidInput."""
        from shards.codes import check_token
        return tuple(dict.fromkeys(check_token(self.resolve_token(check_token(t))) for t in tokens))

    def unmet_filters(self, filters: tuple[str, ...]) -> str:
        """What a search whose filters no item carries says: the filters, and the nearest tokens."""
        hint = "".join(f"; {f}: did you mean {' or '.join(c)}?" for f in filters if (c := self.close_tokens(f)))
        return f"no catalog item carries every filter ({', '.join(filters)}){hint}"

    def close_tokens(self, token: str, n: int = 3) -> list[str]:
        """This vocabulary's tokens nearest to one it does not hold (for a "did you mean")."""
        if token in self.index:
            return []
        field, _, value = token.partition("=")
        same_field = [t for t in self.tokens[len(SPECIALS):] if t.startswith(field + "=")]
        inside = [t for t in same_field if len(_folded(value)) >= 3 and _folded(value).rstrip("s") in _folded(t)]
        return (inside or difflib.get_close_matches(token, self.tokens[len(SPECIALS):], n=n, cutoff=0.6))[:n]

    def forced_prefix(self, category_token: str) -> dict[int, str]:
        """Field index -> token that guided generation forces: the category and its great-category."""
        value = category_token.split("=", 1)[1]
        forced = {self.fields.index(self.category_field): category_token}
        great = self.tree.get(value, {}).get(self.great_field)
        if great is not None:
            forced[self.fields.index(self.great_field)] = self.token(self.great_field, great)
        return forced

    def stated_tokens(self, stated: dict[str, str]) -> dict[int, str]:
        """Field index -> token for what a title states (e.g. {"gender": "Men", "baseColour": "Navy Blue"}),
        which guided generation forces as it does the category. Values outside the vocabulary
        (or its rare-value bucket) say nothing definite and are left to the model."""
        return {self.fields.index(f): f"{f}={v}" for f, v in stated.items()
                if f in self.fields and v != "other" and v in self.values[f]}

    # ------------------------------------------------------------ file
    def to_json(self) -> dict:
        return {"fields": list(self.fields), "values": self.values, "tree": self.tree, "min_count": self.min_count,
                "great_field": self.great_field, "category_field": self.category_field}

    def save(self, path: Path = FILE) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: Path = FILE) -> "Taxonomy":
        d = json.loads(Path(path).read_text())
        return cls(fields=tuple(d["fields"]), values=d["values"], tree=d["tree"], min_count=d["min_count"],
                   great_field=d["great_field"], category_field=d["category_field"])
