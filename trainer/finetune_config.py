"""Settings of the fine-tune step and of `--every`: torch-free, so the command line stays quick."""
from __future__ import annotations

import re
from dataclasses import dataclass


# Records one job run reads at most. On 2 cores a run of 500,000 events spent 66 s outside
# training (README "Fine-tuning"): with the default 5 training minutes it ends in about 6,
# well inside the Kubernetes job's 25-minute deadline.
MAX_EVENTS = 500_000


@dataclass(frozen=True)
class FinetuneConfig:
    # New items start from random vectors and the new events make only a few batches per epoch:
    # many short epochs let them catch up; the rate decays on plateaus, and the gate rejects a
    # candidate that got worse.
    lr: float = 2e-3
    max_epochs: int = 100
    patience: int = 6  # epochs without a better validation NDCG@20 before stopping
    max_minutes: float = 5.0  # training stops here; reading, evaluation and export come on top
    batch_size: int = 256
    min_gain: float = 0.0  # publish when candidate NDCG@20 >= live NDCG@20 + min_gain
    min_users: int = 20  # held-out users needed for a decision; fewer: skip and wait for more events
    # Old users' histories trained on beside the new ones, per new user. Without plenty of them
    # a fine-tune forgets what it knew (bench online: repeat views were no longer recommended).
    rehearsal: float = 10.0
    holdout: float = 0.2  # share of the newest users held out of training for the gate
    seed: int = 0


@dataclass(frozen=True)
class Every:
    """`--every`: run after `events` new events, or every `seconds`; both None: once."""
    events: int | None = None
    seconds: float | None = None


UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_every(text: str | None) -> Every:
    """'500' -> every 500 events; '30s', '10m', '2h' -> every so many seconds; None -> once."""
    if text is None:
        return Every()
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match or float(match.group(1)) <= 0 or (not match.group(2) and "." in match.group(1)):
        raise ValueError(f"--every {text!r}: expected a number of events (500) or a duration (30s, 10m, 2h)")
    if match.group(2):
        return Every(seconds=float(match.group(1)) * UNITS[match.group(2)])
    return Every(events=int(match.group(1)))
