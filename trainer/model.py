"""The next-item Transformer: SASRec-shaped, built from HuggingFace BERT layers.

Item embeddings plus position embeddings go through a stack of `BertLayer`s under a causal,
padding-aware attention mask; the hidden state at each position scores every item in the
catalogue against the (tied) item embedding table. Training uses a full softmax cross-entropy
over the catalogue at every non-padding position.

Inputs are left-padded model ids (0 = padding). Positions count from the right end, so the
newest item always sits at position max_len - 1 whatever the padded length of the batch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertEncoder

from serving.wire import PADDING
NEG_INF = -1e9  # finite, so ONNX and quantised graphs stay free of inf arithmetic


@dataclass
class ModelArgs:
    num_ids: int  # embedding rows: every known item plus padding
    max_len: int = 50
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.3

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class NextItemModel(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.item_embedding = nn.Embedding(args.num_ids, args.hidden, padding_idx=PADDING)
        self.position_embedding = nn.Embedding(args.max_len, args.hidden)
        self.norm = nn.LayerNorm(args.hidden, eps=1e-12)
        self.dropout = nn.Dropout(args.dropout)
        config = BertConfig(
            vocab_size=1, hidden_size=args.hidden, num_hidden_layers=args.layers,
            num_attention_heads=args.heads, intermediate_size=4 * args.hidden, hidden_act="gelu",
            hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout,
            max_position_embeddings=args.max_len, layer_norm_eps=1e-12,
        )
        config._attn_implementation = "sdpa"
        self.encoder = BertEncoder(config)
        self.apply(_init_weights)

    @property
    def num_ids(self) -> int:
        return self.item_embedding.num_embeddings

    def embed(self, item_ids: torch.Tensor, sparse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The first layer's input [batch, length, hidden] and the attention mask of left-padded ids.
        sparse: the item table's gradient holds only the rows looked up (see `loss`)."""
        item_ids = item_ids[:, -self.args.max_len:]
        length = item_ids.shape[1]
        positions = torch.arange(self.args.max_len - length, self.args.max_len, device=item_ids.device)
        items = nn.functional.embedding(item_ids, self.item_embedding.weight, PADDING, sparse=sparse)
        x = items + self.position_embedding(positions)
        return self.dropout(self.norm(x)), _attention_mask(item_ids, x.dtype)

    def encode(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Hidden states [batch, length, hidden] of left-padded ids [batch, length]."""
        x, mask = self.embed(item_ids)
        return self.encoder(x, attention_mask=mask).last_hidden_state

    def encode_newest(self, item_ids: torch.Tensor, sparse: bool = False) -> torch.Tensor:
        """The newest position's hidden state [batch, hidden], equal to encode(...)[:, -1]: the last
        layer computes that one position only (its query against every key), which is all an
        answer needs."""
        x, mask = self.embed(item_ids, sparse)
        *lower, last = self.encoder.layer
        for layer in lower:
            x = layer(x, mask)
        return _newest_output(last, x, mask)

    def score(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every model id for each hidden state; padding can never win."""
        scores = hidden @ self.item_embedding.weight.T
        return scores.index_fill(-1, torch.tensor([PADDING], device=scores.device), NEG_INF)

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Next-item scores [batch, num_ids] after each left-padded sequence."""
        return self.score(self.encode_newest(item_ids))

    def loss(self, item_ids: torch.Tensor, targets: torch.Tensor, negatives: int = 0) -> torch.Tensor:
        """Cross-entropy of the targets that are not padding: targets [batch, length] has one per
        position; targets [batch] one per sequence, after its newest item (only that position is
        computed in the last layer). negatives=0 scores the whole catalogue; negatives=N scores the
        target against N item ids drawn uniformly (one draw shared by the batch) and, with
        targets [batch], gives the item table a sparse gradient (the rows used), so a step costs the
        same at any catalogue size (trainer/train.py gives the table a sparse optimiser then)."""
        drawn = self.draws(negatives)
        sparse = drawn and targets.dim() == 1
        if targets.dim() == 1:
            hidden, wanted = self.encode_newest(item_ids, sparse), targets
        else:
            hidden = self.encode(item_ids)
            wanted = targets[:, -hidden.shape[1]:]
        keep = wanted != PADDING
        hidden, wanted = hidden[keep], wanted[keep]
        if drawn:
            return _sampled_softmax(hidden, wanted, self.item_embedding.weight, negatives, sparse)
        return nn.functional.cross_entropy(hidden @ self.item_embedding.weight.T, wanted)

    def draws(self, negatives: int) -> bool:
        """Whether `loss(..., negatives)` draws negatives (asking for as many as there are items
        scores the whole catalogue)."""
        return 0 < negatives < self.num_ids - 1

    def grow(self, num_ids: int) -> int:
        """Extend the item table to `num_ids` rows (new items start from small random vectors)."""
        added = num_ids - self.num_ids
        if added < 0:
            raise ValueError(f"cannot shrink the item table from {self.num_ids} to {num_ids} rows")
        if added:
            old = self.item_embedding.weight.data
            table = nn.Embedding(num_ids, self.args.hidden, padding_idx=PADDING).to(old.device, old.dtype)
            _init_weights(table)
            table.weight.data[: old.shape[0]] = old
            self.item_embedding = table
            self.args.num_ids = num_ids
        return added


def _sampled_softmax(hidden: torch.Tensor, targets: torch.Tensor, table: torch.Tensor, negatives: int,
                     sparse: bool) -> torch.Tensor:
    """Softmax over each target and `negatives` uniform draws (a draw equal to the target is masked).
    Uniform draws need no log-q correction: every item is equally likely to be drawn."""
    drawn = torch.randint(1, table.shape[0], (negatives,), device=hidden.device)
    positive = (hidden * nn.functional.embedding(targets, table, sparse=sparse)).sum(-1, keepdim=True)
    negative = hidden @ nn.functional.embedding(drawn, table, sparse=sparse).T
    negative = negative.masked_fill(drawn[None, :] == targets[:, None], NEG_INF)
    logits = torch.cat([positive, negative], dim=1)
    return nn.functional.cross_entropy(logits, torch.zeros_like(targets))


def _newest_output(layer, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A BertLayer's output at the last position alone [batch, hidden] (same weights, same result)."""
    attention = layer.attention.self
    batch, heads, size = x.shape[0], attention.num_attention_heads, attention.attention_head_size

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(batch, -1, heads, size).transpose(1, 2)

    newest = x[:, -1:]
    context = nn.functional.scaled_dot_product_attention(
        split(attention.query(newest)), split(attention.key(x)), split(attention.value(x)),
        attn_mask=mask[:, :, -1:], dropout_p=attention.dropout.p if layer.training else 0.0, scale=attention.scaling)
    attended = layer.attention.output(context.transpose(1, 2).reshape(batch, 1, heads * size), newest)
    return layer.feed_forward_chunk(attended)[:, 0]


def _attention_mask(item_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask [batch, 1, length, length]: causal, padding keys hidden.

    Every position may always see itself, so no row is fully masked: an all-padding sequence
    (a brand-new user) still gives finite outputs.
    """
    length = item_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=item_ids.device).tril()
    seen = causal & (item_ids != PADDING)[:, None, :]
    seen = seen | torch.eye(length, dtype=torch.bool, device=item_ids.device)
    return torch.zeros(seen.shape, dtype=dtype, device=item_ids.device).masked_fill(~seen, torch.finfo(dtype).min)[:, None]


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            module.weight.data[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
