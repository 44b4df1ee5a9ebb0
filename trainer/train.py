"""The training loop: full-catalogue cross-entropy, early stopping on validation NDCG@20.

`fit(path)` is the whole job from code (tests train a tiny model with `max_minutes=0.1`);
`shopguide train` is the same call from the command line. One set of defaults for every data set.
"""
from __future__ import annotations

import copy
import dataclasses
import random
import time
from pathlib import Path

import torch
from tqdm import tqdm

from shopguide.errors import UserError
from trainer import corpus, data, seen_bias
from trainer.checkpoint import Checkpoint
from trainer.evaluate import evaluate_held_out, evaluate_model
from trainer.item_index import ItemIndex
from trainer.config import FULL_SOFTMAX_MAX_IDS, TrainConfig
from trainer.model import NextItemModel

MONITOR = "NDCG@20"
PROBE_STEPS = 3  # steps each thread count trains, in turn, at the start of every epoch


def fit(path: Path | str, config: TrainConfig = TrainConfig(), out: Path | str | None = None,
        progress: bool = True) -> Checkpoint:
    """Train a fresh model on the data file at `path`; save to `out`/checkpoint.pt if given."""
    torch.manual_seed(config.seed)
    found = corpus.load(path, config.catalogue or None, config.hold_out, config.seed)
    vocabulary, split = found.vocabulary, found.split
    model = NextItemModel(config.model_args(found.trained_ids, vocabulary.size if vocabulary else 0))
    if vocabulary is not None:
        if model.draws(config.negatives_for(model.num_ids)):
            raise UserError(f"--catalogue with {model.num_ids - 1:,} items or --negatives: the text tower needs the "
                            f"whole-catalogue loss (at most {FULL_SOFTMAX_MAX_IDS - 1:,} items, no --negatives)")
        model.item_tokens.copy_(found.item_tokens(0, found.trained_ids))
    trained_index = ItemIndex(found.index.to_list()[:found.trained_ids - 1])
    checkpoint = Checkpoint(model, trained_index, dataclasses.asdict(config), data=str(path), vocabulary=vocabulary)
    target = Path(out) / "checkpoint.pt" if out is not None else None
    train(checkpoint, split, config, target, progress)
    if found.held_out:
        corpus.grow_held_out(model, found)
        checkpoint.index = found.index
        checkpoint.metrics["held_out"] = evaluate_held_out(model, found)
    checkpoint.metrics["test"] = evaluate_model(model, split.test_inputs, split.test_targets)
    if target is not None:
        checkpoint.save(target)
    return checkpoint


def train(checkpoint: Checkpoint, split: data.Split, config: TrainConfig,
          target: Path | None = None, progress: bool = True) -> None:
    """Train checkpoint.model in place; it ends holding the best validation weights (monitored
    without the seen-item bias) and the seen-item bias chosen for them on validation
    (trainer/seen_bias.py), or, if those do worse on validation, the weights and bias it came with.

    The checkpoint is saved to `target` at every improvement, so a killed run leaves its best.
    """
    model, rng = checkpoint.model, random.Random(config.seed)
    cut = data.training_prefixes if config.prefixes else data.training_windows
    training = data.TrainingSet(cut(split.train, config.max_len), last_only=config.prefixes)
    negatives = config.negatives_for(model.num_ids)
    optimisers = optimisers_for(model, config, negatives)
    plateaus = [torch.optim.lr_scheduler.ReduceLROnPlateau(o, mode="max", factor=config.lr_decay, patience=config.lr_patience)
                for o in optimisers]
    deadline = time.monotonic() + 60.0 * config.max_minutes
    threads, previous_threads = thread_counts(config.threads), torch.get_num_threads()
    # Scored before the first step, so a fine-tune that only makes things worse hands back the
    # weights it started from (a fresh model's baseline is near zero and is beaten at once).
    came_with = evaluate_model(model, split.valid_inputs, split.valid_targets)
    start_state = best_state = copy.deepcopy(model.state_dict())
    stale = 0
    # Monitored without the seen-item bias, whatever the starting weights carried (a fine-tune's new
    # events may come back to items more or less often than the old ones did); chosen again at the end.
    best = came_with[MONITOR]
    if model.seen_bias.item():
        model.seen_bias.zero_()
        best = evaluate_model(model, split.valid_inputs, split.valid_targets)[MONITOR]
    bar = tqdm(range(config.max_epochs), desc="train", unit="epoch", disable=not progress)
    for epoch in bar:
        started, cpu = time.monotonic(), time.process_time()
        loss = _epoch(model, optimisers, training.batches(config.batch_size, rng), negatives, deadline, threads)
        valid = evaluate_model(model, split.valid_inputs, split.valid_targets)
        checkpoint.history.append({"epoch": epoch + 1, "loss": loss, "lr": optimisers[0].param_groups[0]["lr"],
                                   "seconds": time.monotonic() - started,
                                   "cpu_seconds": time.process_time() - cpu, "threads": torch.get_num_threads(),
                                   **{f"valid_{k}": v for k, v in valid.items()}})
        bar.set_postfix(loss=f"{loss:.3f}", ndcg20=f"{valid[MONITOR]:.4f}", best=f"{max(best, valid[MONITOR]):.4f}")
        for plateau in plateaus:
            plateau.step(valid[MONITOR])
        if valid[MONITOR] > best:
            best, best_state, stale = valid[MONITOR], copy.deepcopy(model.state_dict()), 0
            checkpoint.metrics["valid"] = valid
            if target is not None:
                checkpoint.save(target)
        else:
            stale += 1
        if stale >= config.patience or time.monotonic() >= deadline:
            break
    _hand_back(checkpoint, split, best_state, start_state, came_with)
    if target is not None:
        checkpoint.save(target)
    model.eval()
    torch.set_num_threads(previous_threads)


def _hand_back(checkpoint: Checkpoint, split: data.Split, best_state: dict, start_state: dict,
               came_with: dict[str, float]) -> None:
    """Load the best weights with the seen-item bias chosen for them, or the starting weights as
    they came (start_state, whose validation metrics are came_with) if those did better on validation."""
    model = checkpoint.model
    model.load_state_dict(best_state)
    model.seen_bias.fill_(seen_bias.fit(model, split.valid_inputs, split.valid_targets))
    valid = evaluate_model(model, split.valid_inputs, split.valid_targets)
    if valid[MONITOR] < came_with[MONITOR]:
        model.load_state_dict(start_state)
        valid = came_with
    checkpoint.metrics["valid"] = valid


def thread_counts(threads: int) -> list[int]:
    """The thread counts an epoch may train with: `threads` if set, else torch's default and its halvings
    down to 1. One thread per core is not always fastest: with the cores shared, each of a step's many
    small operations waits for its slowest thread (5x slower with 2 threads than 1 on the busy 2-core machine)."""
    if threads:
        return [threads]
    counts = [torch.get_num_threads()]
    while counts[-1] > 1:
        counts.append(counts[-1] // 2)
    return counts


def optimisers_for(model: NextItemModel, config: TrainConfig, negatives: int) -> list:
    """AdamW; with drawn negatives on prefixes the item table's gradient is sparse (the rows a step
    used), so the table gets lazy Adam (SparseAdam, no weight decay) and a step's update does not
    grow with the catalogue."""
    if not (model.draws(negatives) and config.prefixes):
        return [torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)]
    table = model.item_embedding.weight
    rest = [p for p in model.parameters() if p is not table]
    return [torch.optim.AdamW(rest, lr=config.lr, weight_decay=config.weight_decay, fused=True),
            torch.optim.SparseAdam([table], lr=config.lr)]


def _epoch(model: NextItemModel, optimisers: list, batches, negatives: int, deadline: float, threads: list[int]) -> float:
    """One pass over the training batches (cut short at the deadline); mean loss. The first steps try
    each thread count in turn; the rest of the epoch, and the evaluation after it, use the fastest."""
    model.train()
    batches, losses, took = iter(batches), [], dict.fromkeys(threads, 0.0)
    for count, (inputs, targets) in zip(threads * PROBE_STEPS if len(threads) > 1 else [], batches):
        torch.set_num_threads(count)
        started = time.perf_counter()
        losses.append(_step(model, optimisers, inputs, targets, negatives))
        took[count] += time.perf_counter() - started
    torch.set_num_threads(min(took, key=took.get))
    for inputs, targets in batches:
        losses.append(_step(model, optimisers, inputs, targets, negatives))
        if time.monotonic() >= deadline:
            break
    return sum(losses) / max(len(losses), 1)


def _step(model: NextItemModel, optimisers: list, inputs: torch.Tensor, targets: torch.Tensor, negatives: int) -> float:
    loss = model.loss(inputs, targets, negatives)
    for optimiser in optimisers:
        optimiser.zero_grad(set_to_none=True)
    loss.backward()
    for optimiser in optimisers:
        optimiser.step()
    return loss.item()
