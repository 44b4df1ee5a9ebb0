"""Items known by their content, and queries read the same way.

An item's content is its catalogue title plus its categories and brand. Titles are cut into
WordPiece tokens by a tokenizer trained on the catalogue's own titles (the `tokenizers` library,
nothing downloaded); each category or brand is one attribute token of its own. `TextTower` turns a
row of tokens into a vector in the item space:
the model adds it to an item's id vector, so an item the model never saw in training still has
a vector (its content), and a shopper's search query, tokenised like a title, becomes a vector
that steers the answer (trainer/model.py).

Token ids: 0 is padding (serving/wire.py's QUERY_PADDING), 1 unknown, then the tokenizer's
vocabulary, then one id per attribute known at training time (an attribute first seen later is
left out of the item's row).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertIntermediate, BertOutput

from serving import wire

SPECIALS = ["[PAD]", "[UNK]"]
VOCABULARY = 8_000          # WordPiece tokens learnt from the titles
TITLE_TOKENS = 12           # an item row: its title's first 12 tokens...
ATTRIBUTE_TOKENS = 6        # ...then up to 6 categories and brand
ITEM_TOKENS = TITLE_TOKENS + ATTRIBUTE_TOKENS
QUERY_TOKENS = 12           # a query's first 12 tokens
DROPOUT = 0.1               # the tower's own


def train_tokenizer(titles: Iterable[str], vocabulary: int = VOCABULARY):
    """A lower-casing WordPiece tokenizer learnt from the titles ([PAD] = 0, [UNK] = 1)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(titles, trainers.WordPieceTrainer(vocab_size=vocabulary, special_tokens=SPECIALS))
    return tokenizer


@dataclass
class Vocabulary:
    """What turns catalogue fields into token rows: the tokenizer and the attribute ids."""
    tokenizer: object  # tokenizers.Tokenizer
    attributes: dict[str, int]  # category or brand -> token id (after the tokenizer's ids)

    @classmethod
    def learn(cls, records: Iterable[dict]) -> "Vocabulary":
        """From catalogue records (`title`, `categories` and optional `brand`)."""
        records = list(records)
        tokenizer = train_tokenizer(record["title"] for record in records)
        names = sorted({name for record in records for name in _attribute_names(record)})
        first = tokenizer.get_vocab_size()
        return cls(tokenizer, {name: first + n for n, name in enumerate(names)})

    @property
    def size(self) -> int:
        return self.tokenizer.get_vocab_size() + len(self.attributes)

    def item_rows(self, records: Sequence[dict | None]) -> np.ndarray:
        """[len(records), ITEM_TOKENS]: title tokens, then attribute tokens; None (no catalogue
        record) is a row of padding."""
        titles = wire.token_rows(self.tokenizer, [r["title"] if r else "" for r in records], TITLE_TOKENS)
        attributes = np.zeros((len(records), ATTRIBUTE_TOKENS), dtype=np.int64)
        for n, record in enumerate(records):
            known = [self.attributes[a] for a in _attribute_names(record or {}) if a in self.attributes]
            attributes[n, :len(known[:ATTRIBUTE_TOKENS])] = known[:ATTRIBUTE_TOKENS]
        return np.concatenate([titles, attributes], axis=1)

    def query_rows(self, queries: Sequence[str]) -> np.ndarray:
        return wire.token_rows(self.tokenizer, queries, QUERY_TOKENS)

    def to_dict(self) -> dict:
        return {"tokenizer": self.tokenizer.to_str(), "attributes": self.attributes}

    @classmethod
    def from_dict(cls, payload: dict) -> "Vocabulary":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(payload["tokenizer"]), dict(payload["attributes"]))

    def save_tokenizer(self, path) -> None:
        self.tokenizer.save(str(path))


def catalogue_fields(record) -> dict:
    """What `Vocabulary.item_rows` reads, from a catalogue record (streams.catalog_schema.CatalogItem)."""
    return {"title": record.title, "categories": list(record.categories), "brand": record.brand}


def _attribute_names(record: dict) -> list[str]:
    names = [f"category:{name}" for name in record.get("categories", ())]
    return names + ([f"brand:{record['brand']}"] if record.get("brand") else [])


class TextTower(nn.Module):
    """Token rows [n, width] -> vectors [n, hidden]: the mean of the row's token embeddings, a
    transformers feed-forward block (BertIntermediate + BertOutput: GELU, residual, LayerNorm),
    then a projection of its own for items (`forward`) and for queries (`query`). A row of padding
    gives the zero vector (no content, no query).

    Every training step scores the whole catalogue, so every item's vector is computed with its
    gradient at every step: attention over each title's tokens would cost ~10 GFLOP a step on
    Toys, this ~0.3. Stale cached vectors with a few fresh rows were tried and fail: the rows
    without a gradient cannot push back, and the vectors drift to ever larger norms."""

    def __init__(self, vocabulary: int, hidden: int, dropout: float = DROPOUT):
        super().__init__()
        self.tokens = nn.EmbeddingBag(vocabulary, hidden, mode="mean", padding_idx=wire.QUERY_PADDING)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        config = BertConfig(hidden_size=hidden, intermediate_size=2 * hidden, hidden_act="gelu",
                            hidden_dropout_prob=dropout, layer_norm_eps=1e-12)
        self.intermediate, self.output = BertIntermediate(config), BertOutput(config)
        self.item_out = nn.Linear(hidden, hidden)
        self.query_out = nn.Linear(hidden, hidden)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._encoded(tokens, self.item_out)

    def query(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._encoded(tokens, self.query_out)

    def _encoded(self, tokens: torch.Tensor, out: nn.Linear) -> torch.Tensor:
        x = self.norm(self.tokens(tokens))
        x = self.output(self.intermediate(x), x)
        return out(x) * (tokens != wire.QUERY_PADDING).any(1, keepdim=True).to(x.dtype)
