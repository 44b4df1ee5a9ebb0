"""A self-describing checkpoint: model arguments, training config, item index, history, weights.

One file (`checkpoint.pt`) is enough to rebuild the model and map its ids back to the shop's.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from shopguide.errors import UserError
from trainer.content import Vocabulary
from trainer.item_index import ItemIndex
from trainer.model import ModelArgs, NextItemModel


@dataclass
class Checkpoint:
    model: NextItemModel
    index: ItemIndex
    config: dict = field(default_factory=dict)  # the TrainConfig it was trained with
    history: list[dict] = field(default_factory=list)  # one entry per epoch: loss, valid metrics, seconds
    metrics: dict = field(default_factory=dict)  # {"valid": {...}, "test": {...}} of the kept weights
    data: str = ""  # where the training data came from
    created: str = ""
    vocabulary: Vocabulary | None = None  # the text tower's tokens (models with one)

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "model_args": self.model.args.to_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "item_index": self.index.to_list(),
            "config": self.config, "history": self.history, "metrics": self.metrics,
            "data": self.data, "created": self.created or dt.datetime.now(dt.timezone.utc).isoformat(),
            "vocabulary": self.vocabulary.to_dict() if self.vocabulary else None,
        }
        tmp = path.with_suffix(".tmp")
        torch.save(payload, tmp)
        tmp.replace(path)  # readers never see half a file
        return path

    @classmethod
    def load(cls, path: Path | str) -> "Checkpoint":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such checkpoint")
        try:
            with warnings.catch_warnings():  # a file that is no checkpoint also draws torch's pickle warnings
                warnings.simplefilter("ignore")
                payload = torch.load(path, map_location="cpu", weights_only=True)
            model = NextItemModel(ModelArgs(**payload["model_args"]))
            # a checkpoint from before the seen-item bias scored as a bias of 0 does
            model.load_state_dict({"seen_bias": torch.zeros(()), **payload["state_dict"]})
            model.eval()
            vocabulary = payload.get("vocabulary")
            return cls(model, ItemIndex.from_list(payload["item_index"]), payload["config"], payload["history"],
                       payload["metrics"], payload["data"], payload["created"],
                       Vocabulary.from_dict(vocabulary) if vocabulary else None)
        except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{path}: not a readable checkpoint ({_reason(exc)}); train it again") from None

    def describe(self) -> dict:
        """Everything but the weights, for export metadata and reports."""
        return {"model_args": dataclasses.asdict(self.model.args), "config": self.config,
                "metrics": self.metrics, "data": self.data, "created": self.created,
                "epochs": len(self.history), "seen_bias": self.model.seen_bias.item()}


def _reason(exc: Exception) -> str:
    """torch's messages run to paragraphs (and one advises weights_only=False): keep the first clause."""
    if isinstance(exc, pickle.UnpicklingError):
        return "not a torch checkpoint file"
    text = str(exc).strip().split(". ")[0].splitlines()[0] if str(exc).strip() else ""
    return text[:120] or type(exc).__name__
