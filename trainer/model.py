"""The next-item Transformer: SASRec-shaped, built from HuggingFace BERT layers.

Item embeddings plus position embeddings go through a stack of `BertLayer`s under a causal,
padding-aware attention mask; the hidden state at each position scores every item in the
catalogue against the (tied) item table, plus one bias for the items already in the history
(`seen_bias`: how much a shopper's coming back to an item is worth, chosen on the validation users
after training, trainer/seen_bias.py). Training uses a softmax cross-entropy over the catalogue (see `loss`).

With a catalogue (`text_vocab` > 0), an item's vector is its id vector plus its content vector
from trainer/content.py's text tower, and a search query, encoded by the same tower, is added to
the newest position's input: the answer after a search reads the history in the light of the
query. Training teaches both (see `loss`). A searched answer hedges (`searched_scores`): it mixes
QUERY_WEIGHT of the probabilities read with the query with the rest read without it, so a query
that misleads costs little while one that helps still steers.

Inputs are left-padded model ids (0 = padding). Positions count from the right end, so the
newest item always sits at position max_len - 1 whatever the padded length of the batch.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertEncoder

from serving.wire import PADDING
from trainer.content import ITEM_TOKENS, QUERY_TOKENS, TITLE_TOKENS, TextTower

NEG_INF = -1e9  # finite, so ONNX and quantised graphs stay free of inf arithmetic
ID_DROPOUT = 0.05     # share of id vectors left out of a training step's item table
QUERY_SHARE = 0.1     # training rows given a query drawn from their target's title...
UNRELATED_SHARE = 0.05  # ...or from another row's target
QUERY_ONLY = 0.1      # share of the queried rows whose history is dropped
# A searched answer's share of probability read with the query; the rest is read from the history
# alone. Measured on the Toys test users (README, "An unrelated query"): 0.2 keeps an unrelated
# query's cost within 1 % of HR@10 and still lifts a related query's answer 1.5x.
QUERY_WEIGHT = 0.2


@dataclass
class ModelArgs:
    num_ids: int  # embedding rows: every known item plus padding
    max_len: int = 50
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.3
    text_vocab: int = 0  # token ids of the text tower (trainer/content.py); 0: items known by id only

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
        self.text = TextTower(args.text_vocab, args.hidden) if args.text_vocab else None
        # each model id's content tokens (a row of padding: no catalogue record); a buffer, so saved
        self.register_buffer("item_tokens", torch.zeros(args.num_ids if args.text_vocab else 0, ITEM_TOKENS,
                                                        dtype=torch.long), persistent=bool(args.text_vocab))
        self.folded = False  # the content vectors were added into item_embedding (`folded()`)
        # added to the score of every item already in the history; chosen after training
        # (trainer/seen_bias.py), so the loss never sees it; a buffer, so saved with the weights
        self.register_buffer("seen_bias", torch.zeros(()))
        self.apply(_init_weights)

    @property
    def num_ids(self) -> int:
        return self.item_embedding.num_embeddings

    def item_table(self) -> torch.Tensor:
        """Each model id's vector [num_ids, hidden]: its id vector plus, with a text tower, its
        content vector. In training ID_DROPOUT of the id vectors are left out, so content alone must
        also answer (as it does for an item no training has seen)."""
        if self.text is None or self.folded:
            return self.item_embedding.weight
        ids = self.item_embedding.weight
        if self.training:
            ids = ids * (torch.rand(ids.shape[0], 1, device=ids.device) >= ID_DROPOUT).to(ids.dtype)
        return ids + self.text(self.item_tokens)

    def embed(self, item_ids: torch.Tensor, table: torch.Tensor, query_ids: torch.Tensor | None = None,
              sparse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The first layer's input [batch, length, hidden] and the attention mask of left-padded ids;
        a query's vector joins the newest position. sparse: the item table's gradient holds only the
        rows looked up (see `loss`)."""
        item_ids, x = self._positioned(item_ids, table, sparse)
        if query_ids is not None and self.text is not None:
            x = torch.cat([x[:, :-1], x[:, -1:] + self.text.query(query_ids)[:, None]], dim=1)
        return self.dropout(self.norm(x)), _attention_mask(item_ids, x.dtype)

    def _positioned(self, item_ids: torch.Tensor, table: torch.Tensor, sparse: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The newest max_len ids and their vectors plus position vectors [batch, length, hidden]."""
        item_ids = item_ids[:, -self.args.max_len:]
        length = item_ids.shape[1]
        positions = torch.arange(self.args.max_len - length, self.args.max_len, device=item_ids.device)
        return item_ids, nn.functional.embedding(item_ids, table, PADDING, sparse=sparse) + self.position_embedding(positions)

    def encode(self, item_ids: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states [batch, length, hidden] of left-padded ids [batch, length]."""
        x, mask = self.embed(item_ids, self.item_table() if table is None else table)
        return self.encoder(x, attention_mask=mask).last_hidden_state

    def encode_newest(self, item_ids: torch.Tensor, query_ids: torch.Tensor | None = None,
                      table: torch.Tensor | None = None, sparse: bool = False) -> torch.Tensor:
        """The newest position's hidden state [batch, hidden], equal to encode(...)[:, -1]: the last
        layer computes that one position only (its query against every key), which is all an
        answer needs."""
        x, mask = self.embed(item_ids, self.item_table() if table is None else table, query_ids, sparse)
        return self._through_layers(x, mask, newest=1)[:, 0]

    def encode_searched(self, item_ids: torch.Tensor, query_ids: torch.Tensor,
                        table: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The newest position's hidden state read without the query and with it, [batch, hidden]
        each, from one pass: the sequence gains a twin of its newest position that carries the
        query and sees what the newest sees but not the newest itself. The mask is causal, so no
        other position sees the twin, and each equals its own `encode_newest`."""
        item_ids, x = self._positioned(item_ids, self.item_table() if table is None else table)
        twin = x[:, -1:] + self.text.query(query_ids)[:, None]
        x = self.dropout(self.norm(torch.cat([x, twin], dim=1)))
        both = self._through_layers(x, _with_twin(_attention_mask(item_ids, x.dtype)), newest=2)
        return both[:, 0], both[:, 1]

    def _through_layers(self, x: torch.Tensor, mask: torch.Tensor, newest: int) -> torch.Tensor:
        """The encoder's output at the last `newest` positions [batch, newest, hidden]."""
        *lower, last = self.encoder.layer
        for layer in lower:
            x = layer(x, mask)
        return _newest_outputs(last, x, mask, newest)

    def score(self, hidden: torch.Tensor, item_ids: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of every model id for each hidden state after its history item_ids; padding can never win."""
        scores = self._with_seen(hidden @ (self.item_table() if table is None else table).T, item_ids)
        return scores.index_fill(-1, torch.tensor([PADDING], device=scores.device), NEG_INF)

    def _with_seen(self, scores: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        """Scores of every model id [batch, num_ids] plus seen_bias where the id is in the row's history
        (padding's included: `score` buries it after). An item held twice is written twice, with
        the same value."""
        ids = item_ids[:, -self.args.max_len:]
        return scores.scatter(1, ids, scores.gather(1, ids) + self.seen_bias)

    def forward(self, item_ids: torch.Tensor, query_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Next-item scores [batch, num_ids] after each left-padded sequence (and its search query's
        token ids, serving/wire.py's GRAPH_QUERY, when the model has a text tower)."""
        table = self.item_table()
        if query_ids is not None and self.text is not None:
            return self.searched_scores(item_ids, query_ids, table)[0]
        return self.score(self.encode_newest(item_ids, None, table), item_ids, table)

    def searched_scores(self, item_ids: torch.Tensor, query_ids: torch.Tensor, table: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores [batch, num_ids] of asks that may carry a search query, and the hidden state read
        with the query [batch, hidden]. A row with a query and a history is scored by the mixture
        QUERY_WEIGHT * p(item | history, query) + (1 - QUERY_WEIGHT) * p(item | history) (see
        `hedged`); a row without a query, or with a query alone, keeps its plain scores."""
        table = self.item_table() if table is None else table
        plain, queried = self.encode_searched(item_ids, query_ids, table)
        return hedged(self.score(queried, item_ids, table), self.score(plain, item_ids, table),
                      hedge_odds(item_ids, query_ids)), queried

    def loss(self, item_ids: torch.Tensor, targets: torch.Tensor, negatives: int = 0) -> torch.Tensor:
        """Cross-entropy of the targets that are not padding: targets [batch, length] has one per
        position; targets [batch] one per sequence, after its newest item (only that position is
        computed in the last layer). negatives=0 scores the whole catalogue; negatives=N scores the
        target against N item ids drawn uniformly (one draw shared by the batch) and, with
        targets [batch], gives the item table a sparse gradient (the rows used), so a step costs the
        same at any catalogue size (trainer/train.py gives the table a sparse optimiser then)."""
        drawn = self.draws(negatives)
        if drawn and self.text is not None:
            raise ValueError("the text tower needs the whole-catalogue loss (at most 200,000 items, no --negatives)")
        sparse = drawn and targets.dim() == 1
        table = self.item_table()
        if targets.dim() == 1:
            query_ids = None
            if self.text is not None:
                query_ids, query_only = self.training_queries(targets)
                item_ids = item_ids.masked_fill(query_only[:, None], PADDING)
            hidden, wanted = self.encode_newest(item_ids, query_ids, table, sparse), targets
        else:
            hidden = self.encode(item_ids, table)
            wanted = targets[:, -hidden.shape[1]:]
        keep = wanted != PADDING
        hidden, wanted = hidden[keep], wanted[keep]
        if drawn:
            return _sampled_softmax(hidden, wanted, table, negatives, sparse)
        return nn.functional.cross_entropy(hidden @ table.T, wanted)

    def training_queries(self, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Simulated searches for a batch of targets [batch]: QUERY_SHARE of the rows get 2-3
        consecutive title tokens of their target (a shopper typing words of what they then open),
        UNRELATED_SHARE get those of another row's target (a search the next item does not answer),
        the rest none. Returns the query token rows [batch, QUERY_TOKENS] and which rows lose their
        history (QUERY_ONLY of the related ones: a shopper who arrives by searching)."""
        draw = torch.rand(targets.shape[0], device=targets.device)
        related, unrelated = draw < QUERY_SHARE, (draw >= QUERY_SHARE) & (draw < QUERY_SHARE + UNRELATED_SHARE)
        titles = self.item_tokens[torch.where(unrelated, targets.roll(1), targets), :TITLE_TOKENS]
        lengths = (titles != PADDING).sum(1)
        span = torch.randint(2, 4, lengths.shape, device=targets.device).minimum(lengths)
        start = (torch.rand(lengths.shape, device=targets.device) * (lengths - span + 1)).long()
        columns = torch.arange(QUERY_TOKENS, device=targets.device)
        query = titles.gather(1, (start[:, None] + columns).clamp(max=TITLE_TOKENS - 1))
        query = query.masked_fill((columns >= span[:, None]) | ~(related | unrelated)[:, None], PADDING)
        return query, related & (torch.rand(draw.shape, device=draw.device) < QUERY_ONLY)

    def draws(self, negatives: int) -> bool:
        """Whether `loss(..., negatives)` draws negatives (asking for as many as there are items
        scores the whole catalogue)."""
        return 0 < negatives < self.num_ids - 1

    def grow(self, num_ids: int, tokens: torch.Tensor | None = None) -> int:
        """Extend the item table to `num_ids` rows. New items start from small random id vectors, or
        with a text tower from none: their content (`tokens` [added, ITEM_TOKENS]) is their vector."""
        added = num_ids - self.num_ids
        if added < 0:
            raise ValueError(f"cannot shrink the item table from {self.num_ids} to {num_ids} rows")
        if added:
            old = self.item_embedding.weight.data
            table = nn.Embedding(num_ids, self.args.hidden, padding_idx=PADDING).to(old.device, old.dtype)
            _init_weights(table)
            if self.text is not None:
                table.weight.data.zero_()
                rows = torch.zeros(added, ITEM_TOKENS, dtype=torch.long) if tokens is None else tokens
                self.item_tokens = torch.cat([self.item_tokens, rows.to(self.item_tokens)])
            table.weight.data[: old.shape[0]] = old
            self.item_embedding = table
            self.args.num_ids = num_ids
        return added

    def serving_copy(self) -> "NextItemModel":
        """A copy for serving whose item table already holds id plus content vectors, so a call
        runs the text tower on its query only."""
        serving = copy.deepcopy(self).eval()
        with torch.no_grad():
            serving.item_embedding.weight.copy_(serving.item_table())
        serving.folded = True
        return serving


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


def hedge_odds(item_ids: torch.Tensor, query_ids: torch.Tensor) -> torch.Tensor:
    """Per row [batch]: log((1 - QUERY_WEIGHT) / QUERY_WEIGHT) where a query meets a history, else
    NEG_INF (nothing to hedge with, or nothing to hedge)."""
    asked = (query_ids != PADDING).any(1) & (item_ids != PADDING).any(1)
    return torch.where(asked, math.log((1 - QUERY_WEIGHT) / QUERY_WEIGHT), NEG_INF)


def hedged(queried: torch.Tensor, plain: torch.Tensor, odds: torch.Tensor) -> torch.Tensor:
    """The mixture of two score rows [batch, n] (their softmax over n) with the odds [batch] of
    plain to queried, as log-probability plus the queried row's log-normaliser. On that scale an
    item's queried score is a lower bound of its mixed score, so an item scored by the queried
    hidden state alone (one added after export) stays comparable; with odds NEG_INF the result is
    the queried row itself."""
    shift = queried.logsumexp(1, keepdim=True) - plain.logsumexp(1, keepdim=True) + odds[:, None]
    return torch.logaddexp(queried, plain + shift)


def _newest_outputs(layer, x: torch.Tensor, mask: torch.Tensor, newest: int) -> torch.Tensor:
    """A BertLayer's output at the last `newest` positions alone [batch, newest, hidden] (same
    weights, same result)."""
    attention = layer.attention.self
    batch, heads, size = x.shape[0], attention.num_attention_heads, attention.attention_head_size

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(batch, -1, heads, size).transpose(1, 2)

    last = x[:, -newest:]
    context = nn.functional.scaled_dot_product_attention(
        split(attention.query(last)), split(attention.key(x)), split(attention.value(x)),
        attn_mask=mask[:, :, -newest:], dropout_p=attention.dropout.p if layer.training else 0.0, scale=attention.scaling)
    attended = layer.attention.output(context.transpose(1, 2).reshape(batch, newest, heads * size), last)
    return layer.feed_forward_chunk(attended)


def _with_twin(mask: torch.Tensor) -> torch.Tensor:
    """An attention mask [batch, 1, length, length] grown by a last position, the newest's twin: it
    sees what the newest sees, except the newest, and itself; no other position sees it."""
    batch, length = mask.shape[0], mask.shape[-1]
    hidden_from = torch.full((batch, 1, 1, 1), torch.finfo(mask.dtype).min, dtype=mask.dtype, device=mask.device)
    seen = torch.zeros_like(hidden_from)
    twin_row = torch.cat([mask[:, :, -1:, :-1], hidden_from, seen], dim=3)
    column = hidden_from.expand(batch, 1, length, 1)
    return torch.cat([torch.cat([mask, column], dim=3), twin_row], dim=2)


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
