"""Model versions in a Triton model repository: publish, list, roll back, keep the newest N.

`<root>/<model>/` holds config.pbtxt and model.py (the template, kept in git). Each publish writes
a numbered, self-contained version directory beside them: model.py, model.onnx, item_index.json,
export.json. A rolled-back version moves to `<model>/retired/<N>`: Triton skips directories
whose names are not numbers, and a version number is never handed out twice, so a
recommendation's model version always names one model.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from shopguide.errors import UserError

TEMPLATE = Path(__file__).resolve().parent.parent / "model_repository" / "next_item"
TEMPLATE_FILES = ("config.pbtxt", "model.py")
EXPORT_FILES = ("item_index.json", "export.json")
OPTIONAL_FILES = ("checkpoint.pt",)  # what trainer/job.py fine-tunes from, when the export has it
RETIRED = "retired"


@dataclass(frozen=True)
class ModelRepository:
    root: Path
    model_name: str = "next_item"

    @classmethod
    def from_settings(cls, settings) -> "ModelRepository":
        return cls(Path(settings.model_repository).resolve(), settings.model_name)

    @property
    def model_dir(self) -> Path:
        return Path(self.root) / self.model_name

    def versions(self) -> list[int]:
        """Versions Triton can serve, oldest first."""
        return _numbered(self.model_dir)

    def retired(self) -> list[int]:
        return _numbered(self.model_dir / RETIRED)

    def latest(self) -> int | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def init(self, template: Path = TEMPLATE) -> None:
        """Give a new repository the model's config and code (an existing one is left alone)."""
        self.model_dir.mkdir(parents=True, exist_ok=True)
        for name in TEMPLATE_FILES:
            if not (self.model_dir / name).exists():
                shutil.copy2(Path(template) / name, self.model_dir / name)

    def publish(self, export_dir: Path, keep: int | None = 3, int8: bool = False) -> int:
        """Add the export as the newest version; returns its number. Keeps the newest `keep` (None: all)."""
        if keep is not None and keep < 1:
            raise UserError("keep must be at least 1")
        self.init()
        staging = self.model_dir / f".publish-{uuid.uuid4().hex}"
        try:
            _stage(Path(export_dir), staging, self.model_dir / "model.py", int8)
            version = self._claim(staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if keep is not None:
            self.prune(keep)
        return version

    def _claim(self, staging: Path) -> int:
        """Rename the staged directory to the next free number: atomic, so Triton never sees half a
        version, and a concurrent publisher that took the number first makes us try the next."""
        version = max(self.versions() + self.retired(), default=0) + 1
        while True:
            try:
                os.rename(staging, self.model_dir / str(version))
                return version
            except OSError:
                if not (self.model_dir / str(version)).exists():
                    raise
                version += 1

    def rollback(self) -> int:
        """Retire the newest version; returns the version that serves from now on."""
        versions = self.versions()
        if len(versions) < 2:
            raise UserError(f"{self.model_dir} holds {len(versions)} version(s): nothing to roll back to")
        self.retire(versions[-1])
        return versions[-2]

    def retire(self, version: int) -> None:
        retired = self.model_dir / RETIRED
        retired.mkdir(exist_ok=True)
        os.rename(self.model_dir / str(version), retired / str(version))

    def prune(self, keep: int) -> list[int]:
        """Delete all but the newest `keep` versions (and retired ones); returns the deleted."""
        removed = self.versions()[:-keep]
        for version in removed:
            shutil.rmtree(self.model_dir / str(version))
        for version in self.retired()[:-keep]:
            shutil.rmtree(self.model_dir / RETIRED / str(version))
        return removed


def export_meta(directory: Path) -> dict:
    """The export.json of an export or a version directory: top_k, max_len and the checkpoint's
    description. Missing or unreadable, it stops the command in one line naming the file."""
    path = Path(directory) / "export.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; every export and model version carries one (`shopguide export`)") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not readable JSON ({exc}); export the model again") from None
    if not isinstance(meta, dict) or not {"top_k", "max_len"} <= meta.keys():
        raise UserError(f"{path}: expected a JSON object with top_k and max_len; export the model again")
    return meta


def _numbered(directory: Path) -> list[int]:
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def _stage(export_dir: Path, staging: Path, model_code: Path, int8: bool) -> None:
    onnx = export_dir / ("model.int8.onnx" if int8 else "model.onnx")
    missing = [p.name for p in [onnx, *(export_dir / name for name in EXPORT_FILES)] if not p.exists()]
    if missing:
        raise UserError(f"{export_dir} is not a model export (no {', '.join(missing)}); `shopguide export` makes one")
    staging.mkdir()
    shutil.copy2(model_code, staging / "model.py")
    shutil.copy2(onnx, staging / "model.onnx")
    for name in EXPORT_FILES:
        shutil.copy2(export_dir / name, staging / name)
    for name in OPTIONAL_FILES:
        if (export_dir / name).exists():
            shutil.copy2(export_dir / name, staging / name)
