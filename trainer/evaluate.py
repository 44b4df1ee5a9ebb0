"""Full-ranking evaluation: each target is ranked against ALL items, HR and NDCG at 5, 10, 20.

Items the user has already seen stay in the ranking, scored by the model as when serving (with
its seen-item bias, trainer/seen_bias.py). The published S3-Rec/ICLRec/ICSRec code sets their
scores to 0 before ranking; we leave that to the model, so the evaluation ranks what it serves.
Ties count against the target: its rank is the number of items scored strictly higher plus those
tied with it.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Sequence

import torch

from trainer.data import left_pad
from trainer.item_index import PADDING

KS = (5, 10, 20)
# the settings the report's training line names
REPORTED_SETTINGS = ("lr", "weight_decay", "batch_size", "dropout", "patience", "max_minutes", "seed")


def ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target (ties counted against it); scorers keep padding at the bottom.
    NaN scores (weights a diverged step wrecked) compare false both ways, which ranked such a
    target first: another item's NaN counts above the target, and a NaN target ranks last."""
    nan = scores.isnan()
    scores = scores.masked_fill(nan, float("inf"))
    target_scores = scores.gather(1, targets[:, None])
    higher = (scores > target_scores).sum(1)
    tied = (scores == target_scores).sum(1) - 1
    return torch.where(nan.gather(1, targets[:, None])[:, 0], scores.shape[1] - 1, higher + tied)


def summarise(all_ranks: torch.Tensor, ks: Sequence[int] = KS) -> dict[str, float]:
    metrics = {}
    for k in ks:
        hit = all_ranks < k
        metrics[f"HR@{k}"] = hit.float().mean().item()
        metrics[f"NDCG@{k}"] = torch.where(hit, 1.0 / torch.log2(all_ranks.float() + 2.0), 0.0).mean().item()
    return metrics


@torch.no_grad()
def evaluate_model(model, inputs: Sequence[list[int]], targets: Sequence[int],
                   batch_size: int = 512, ks: Sequence[int] = KS) -> dict[str, float]:
    # Similar lengths side by side: less padding to encode. Order does not change the means.
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
    was_training = model.training
    model.eval()
    try:
        return evaluate_scorer(lambda batch: model(left_pad(batch, model.args.max_len)),
                               [inputs[i] for i in order], [targets[i] for i in order], batch_size, ks)
    finally:
        model.train(was_training)


def evaluate_scorer(score: Callable[[Sequence[list[int]]], torch.Tensor], inputs: Sequence[list[int]],
                    targets: Sequence[int], batch_size: int = 512, ks: Sequence[int] = KS) -> dict[str, float]:
    """Metrics of any function mapping a batch of histories to scores [batch, num_ids]."""
    found = []
    for start in range(0, len(inputs), batch_size):
        scores = score(inputs[start:start + batch_size])
        found.append(ranks(scores, torch.tensor(targets[start:start + batch_size])))
    return summarise(torch.cat(found) if found else torch.zeros(0, dtype=torch.long), ks)


def popularity_scores(histories: Sequence[list[int]], num_ids: int) -> torch.Tensor:
    """Interaction counts over the given histories, ties broken towards the smaller id."""
    counts = Counter(item for seq in histories for item in seq)
    scores = torch.zeros(num_ids, dtype=torch.float64)
    for item, count in counts.items():
        scores[item] = count
    scores -= torch.arange(num_ids, dtype=torch.float64) / (2.0 * num_ids)
    scores[PADDING] = float("-inf")
    return scores


def evaluate_popularity(histories: Sequence[list[int]], num_ids: int, targets: Sequence[int],
                        ks: Sequence[int] = KS) -> dict[str, float]:
    """The popularity baseline: the same list for every user, counted over the inputs only."""
    scores = popularity_scores(histories, num_ids)
    return evaluate_scorer(lambda batch: scores.expand(len(batch), -1), histories, targets, 4096, ks)


def evaluate_checkpoint(checkpoint, path) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Test metrics of the model and of popularity on the data file, and the facts of the run."""
    from trainer import data

    index, sequences = data.load(path, checkpoint.index)
    split = data.leave_one_out(sequences)
    results = {
        "this model": evaluate_model(checkpoint.model, split.test_inputs, split.test_targets),
        "popularity": evaluate_popularity(split.test_inputs, index.num_ids, split.test_targets),
    }
    config = checkpoint.config
    facts = {
        "data": f"{path} ({len(sequences)} users, {len(split.test_targets)} evaluated, {len(index)} items)",
        "protocol": "leave-one-out; last item = test target; ranked against ALL items; items the user "
                    "has seen stay in the ranking, scored by the model (the S3-Rec/ICLRec/ICSRec code "
                    "sets their scores to 0 before ranking)",
        "model": ", ".join(f"{k}={v}" for k, v in checkpoint.model.args.to_dict().items())
                 + f", seen-item bias {checkpoint.model.seen_bias.item():+.2f} (chosen on validation)",
        "training": f"{len(checkpoint.history)} epochs, "
                    f"{sum(h['seconds'] for h in checkpoint.history) / 60:.1f} min wall, "
                    f"{sum(h.get('cpu_seconds', 0.0) for h in checkpoint.history) / 60:.1f} min CPU, "
                    + ", ".join(f"{k}={config[k]}" for k in REPORTED_SETTINGS if k in config),
        "catalogue": (f"{config['catalogue']} (items known by their titles, categories and brand too: the "
                      "text tower)" if config.get("catalogue") else "none (items known by their ids only)"),
        "unknown test targets": str(sum(t == 0 for t in split.test_targets)),
    }
    return results, facts


def evaluate_held_out(model, corpus) -> dict[str, dict[str, float]]:
    """The test users whose target is a held-out item (trainer/corpus.py: known to the model by its
    content alone), the model beside popularity counted over the training histories, where no
    held-out item ever occurs (so its figures are 0: what an id-only model can do for them)."""
    split, trained = corpus.split, corpus.trained_ids
    users = [n for n, target in enumerate(split.test_targets) if target >= trained]
    inputs, targets = [split.test_inputs[n] for n in users], [split.test_targets[n] for n in users]
    scores = popularity_scores(split.train, model.num_ids)
    return {"this model": evaluate_model(model, inputs, targets),
            "popularity": evaluate_scorer(lambda batch: scores.expand(len(batch), -1), inputs, targets, 4096),
            "users": {"count": float(len(users))}}
