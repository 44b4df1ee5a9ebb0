"""Training settings: one set of defaults for every data set. Kept free of torch so the command
line can list them without importing it."""
from __future__ import annotations

from dataclasses import dataclass, field


FULL_SOFTMAX_MAX_IDS = 200_001  # a step's logits stay under ~200 MB at batch 256
LARGE_CATALOGUE_NEGATIVES = 8_192


def _option(default, doc: str):
    return field(default=default, metadata={"doc": doc})


@dataclass
class TrainConfig:
    max_len: int = _option(50, "newest items of a history the model reads")
    hidden: int = _option(64, "embedding and hidden size")
    layers: int = _option(2, "Transformer layers")
    heads: int = _option(2, "attention heads per layer")
    dropout: float = _option(0.5, "dropout on embeddings, attention and feed-forward")
    lr: float = _option(2e-3, "AdamW learning rate")
    weight_decay: float = _option(0.1, "AdamW weight decay")
    batch_size: int = _option(256, "training sequences per step")
    prefixes: bool = _option(True, "train on every prefix with the loss on its last item "
                                   "(else on whole histories with the loss at every position)")
    negatives: int = _option(0, "score each target against this many uniformly drawn items instead of the "
                                "whole catalogue, so a step costs the same at any size (0: the whole "
                                "catalogue up to 200,000 items, 8,192 drawn above)")
    max_epochs: int = _option(200, "upper bound on passes over the training data")
    lr_decay: float = _option(0.5, "factor applied to the learning rate when validation NDCG@20 stalls")
    lr_patience: int = _option(1, "epochs without improvement tolerated before the learning rate decays")
    patience: int = _option(6, "epochs without a better validation NDCG@20 before stopping")
    max_minutes: float = _option(30.0, "wall-time budget; the best weights so far are kept")
    seed: int = _option(0, "random seed (initialisation, shuffling)")
    threads: int = _option(0, "CPU threads (0: every epoch times a few steps with torch's default and its halvings "
                              "down to 1 and keeps the fastest; fewer are often far faster on a busy machine)")
    catalogue: str = _option("", "catalogue file (items.tsv or item,title[,categories,brand] CSV): items are also "
                                 "known by their text and a search query steers the answer (empty: ids only)")
    hold_out: float = _option(0.0, "share of items kept out of training entirely and added after it by their "
                                   "content alone, to measure new items (test metrics: held_out)")

    def negatives_for(self, num_ids: int) -> int:
        return self.negatives or (LARGE_CATALOGUE_NEGATIVES if num_ids > FULL_SOFTMAX_MAX_IDS else 0)

    def model_args(self, num_ids: int, text_vocab: int = 0):
        from trainer.model import ModelArgs

        return ModelArgs(num_ids=num_ids, max_len=self.max_len, hidden=self.hidden, layers=self.layers,
                         heads=self.heads, dropout=self.dropout, text_vocab=text_vocab)
