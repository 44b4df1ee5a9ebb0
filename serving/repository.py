"""Model versions in a Triton model repository: publish, list, roll back, keep the newest N.

`<root>/<model>/` holds config.pbtxt and model.py (the template, kept in git). Each publish writes
a numbered, self-contained version directory beside them: model.py, wire.py (serving/wire.py: the
tensor names and padding model.py uses), model.onnx, item_index.json, export.json, and
tokenizer.json for a version with a text tower. A rolled-back
version moves to `<model>/retired/<N>`: Triton skips directories whose names are not numbers, and
a version number is never handed out twice, so a recommendation's model version always names one
model.

A version that Triton loaded and that answered a probe before it got its number carries
`verified.json` (serving/rollout.py). The live version is the newest verified one, and
config.pbtxt pins it (`version_policy: specific`), so a restarted Triton loads it and never a
newer version that was not verified. A repository that holds no verified version yet (a first
model published before Triton ever ran) serves its newest version.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from serving import wire
from shopguide.errors import UserError

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).resolve().parent.parent / "model_repository" / "next_item"
TEMPLATE_FILES = ("config.pbtxt", "model.py")
EXPORT_FILES = ("item_index.json", "export.json")
# A text tower's tokenizer (model.py reads it), what trainer/job.py fine-tunes from, and the
# record of the run that made the version.
OPTIONAL_FILES = ("tokenizer.json", "checkpoint.pt", "finetune.json")
# What a version derived from another (`derive`: new items added) shares with it.
SHARED_FILES = ("model.onnx", wire.HISTORY_GRAPH, *EXPORT_FILES, "tokenizer.json", "checkpoint.pt")
RETIRED = "retired"
VERIFIED = "verified.json"
STAGING = ".publish-"
PUBLISH_LOCK = ".publishing.lock"
POLICY = re.compile(r"^version_policy:.*$", re.MULTILINE)
LATEST = "version_policy: { latest: { num_versions: 1 } }"


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

    def verified(self) -> list[int]:
        return [v for v in self.versions() if (self.model_dir / str(v) / VERIFIED).exists()]

    def servable(self) -> list[int]:
        """The versions that may serve: the verified ones, or all while none is."""
        return self.verified() or self.versions()

    def live(self) -> int | None:
        """The version Triton is to serve: the newest servable one."""
        servable = self.servable()
        return servable[-1] if servable else None

    def live_reads_queries(self) -> bool:
        """Whether the live version has a text tower (its export.json has query_tokens): without one,
        a search's query is sent but changes nothing."""
        live = self.live()
        return live is not None and "query_tokens" in export_meta(self.model_dir / str(live))

    def pinned(self) -> int | None:
        """The version config.pbtxt pins, if it pins one."""
        match = re.search(r"specific:\s*{\s*versions:\s*\[\s*(\d+)\s*\]", self._config_text())
        return int(match.group(1)) if match else None

    def pin(self) -> int | None:
        """Point config.pbtxt at the live version (a repository with none verified: the newest);
        returns the live version."""
        live, path = self.live(), self.model_dir / "config.pbtxt"
        policy = f"version_policy: {{ specific: {{ versions: [{live}] }} }}" if self.verified() else LATEST
        text = self._config_text()
        pinned = POLICY.sub(policy, text) if POLICY.search(text) else f"{text.rstrip()}\n{policy}\n"
        if pinned != text:  # rewritten only on a change: Triton reloads a model whose files changed
            _write_atomically(path, pinned)
        return live

    def _config_text(self) -> str:
        return (self.model_dir / "config.pbtxt").read_text()

    def init(self, template: Path = TEMPLATE) -> None:
        """Give a new repository the model's config and code; bring an existing one up to the wire
        form the worker speaks (`upgrade`)."""
        self.model_dir.mkdir(parents=True, exist_ok=True)
        for name in TEMPLATE_FILES:
            if not (self.model_dir / name).exists():
                shutil.copy2(Path(template) / name, self.model_dir / name)
        self.upgrade(template)

    def upgrade(self, template: Path = TEMPLATE) -> list[str]:
        """A repository made before the joined forms (wire.REQUEST_HISTORY, wire.RESPONSE_RANKED)
        gets the template's config.pbtxt (its version policy kept) and model code, and each of its
        versions the template's model.py and wire.py: their graphs and files stay as published, and
        the new code still reads the ITEMS form. What it replaced, by path."""
        replaced = []
        config = self.model_dir / "config.pbtxt"
        current = config.read_text()
        if f'name: "{wire.REQUEST_HISTORY}"' not in current:
            policy = POLICY.search(current)
            text = (Path(template) / "config.pbtxt").read_text()
            _write_atomically(config, POLICY.sub(policy.group(0), text) if policy else text)
            shutil.copy2(Path(template) / "model.py", self.model_dir / "model.py")
            replaced += [str(config), str(self.model_dir / "model.py")]
        for version in self.versions():
            code = self.model_dir / str(version)
            if (code / "wire.py").exists() and "REQUEST_HISTORY" not in (code / "wire.py").read_text():
                shutil.copy2(self.model_dir / "model.py", code / "model.py")
                shutil.copy2(wire.__file__, code / "wire.py")
                replaced.append(str(code))
        if replaced:
            log.warning("model repository upgraded to the joined HISTORY and RANKED forms: %s", ", ".join(replaced))
        return replaced

    @contextmanager
    def publishing(self):
        """Held from staging a version until Triton serves it, and while rolling back or recovering:
        the fine-tune job and `shopguide new-items` share this repository and Triton's one probe
        model, and a recovery must not remove another process's staging directory. The lock is
        the kernel's (flock), so a killed holder releases it."""
        if not self.model_dir.is_dir():  # nothing there yet to publish over, nor to recover
            yield
            return
        with open(self.model_dir / PUBLISH_LOCK, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def publish(self, export_dir: Path, keep: int | None = 3, int8: bool = False) -> int:
        """Add the export as the newest version; returns its number. Keeps the newest `keep` (None: all)."""
        if keep is not None and keep < 1:
            raise UserError("keep must be at least 1")
        staging = self.stage(export_dir, int8)
        try:
            version = self.claim(staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if keep is not None:
            self.prune(keep)
        return version

    def stage(self, export_dir: Path, int8: bool = False) -> Path:
        """The export's serving files in a new staging directory beside the versions (Triton
        ignores it: not a number); `claim` makes it a version."""
        self.init()
        staging = self.model_dir / f"{STAGING}{uuid.uuid4().hex}"
        try:
            _stage(Path(export_dir), staging, self.model_dir / "model.py", int8)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    def derive(self, version: int, files: dict[str, bytes]) -> Path:
        """A staging directory for a version made from `version`: its model files hard-linked (a
        version's files never change in place; copied where the file system cannot link), this
        repository's model.py and wire.py, and `files` (name -> content) beside them."""
        source = self.model_dir / str(version)
        staging = self.model_dir / f"{STAGING}{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            shutil.copy2(self.model_dir / "model.py", staging / "model.py")
            shutil.copy2(wire.__file__, staging / "wire.py")
            for name in SHARED_FILES:
                if (source / name).exists():
                    _link(source / name, staging / name)
            for name, content in files.items():
                (staging / name).write_bytes(content)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    def clean(self) -> list[Path]:
        """Remove staging directories a killed publish left; returns them."""
        leftovers = sorted(self.model_dir.glob(f"{STAGING}*")) if self.model_dir.is_dir() else []
        for path in leftovers:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        return leftovers

    def claim(self, staging: Path) -> int:
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
        """Retire the live version (and any newer one, never verified); returns the live one now."""
        live = self.live()
        if live is None or min(self.versions()) == live:
            raise UserError(f"{self.model_dir} holds no version older than {live}: nothing to roll back to")
        for version in self.versions():
            if version >= live:
                self.retire(version)
        return self.live()

    def retire_unverified(self) -> list[int]:
        """Retire the versions newer than the live one: never verified, they must not serve."""
        live = self.live()
        newer = [v for v in self.versions() if live is not None and v > live]
        for version in newer:
            self.retire(version)
        return newer

    def retire(self, version: int) -> None:
        retired = self.model_dir / RETIRED
        retired.mkdir(exist_ok=True)
        os.rename(self.model_dir / str(version), retired / str(version))

    def prune(self, keep: int) -> list[int]:
        """Delete all but the newest `keep` versions up to the live one (what is newer was never
        verified and stays for `retire_unverified`), and all but `keep` retired ones; returns the deleted."""
        live = self.live()
        removed = [v for v in self.versions() if live is not None and v <= live][:-keep]
        for version in removed:
            shutil.rmtree(self.model_dir / str(version))
        for version in self.retired()[:-keep]:
            shutil.rmtree(self.model_dir / RETIRED / str(version))
        return removed


def mark_verified(directory: Path, facts: dict) -> None:
    """Record in a staged version that Triton loaded it and answered a probe (`facts`: how)."""
    (Path(directory) / VERIFIED).write_text(json.dumps({"verified_at": time.time(), **facts}))


def added_items(directory: Path) -> list[str]:
    """Shop ids of the items added to a version directory after its export (wire.ADDED_ITEMS); none
    when it has no such file."""
    path = directory / wire.ADDED_ITEMS
    return [str(item) for item in json.loads(path.read_text())] if path.exists() else []


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


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f"{STAGING}{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _stage(export_dir: Path, staging: Path, model_code: Path, int8: bool) -> None:
    onnx = export_dir / ("model.int8.onnx" if int8 else "model.onnx")
    missing = [p.name for p in [onnx, *(export_dir / name for name in EXPORT_FILES)] if not p.exists()]
    if missing:
        raise UserError(f"{export_dir} is not a model export (no {', '.join(missing)}); `shopguide export` makes one")
    staging.mkdir()
    shutil.copy2(model_code, staging / "model.py")
    shutil.copy2(wire.__file__, staging / "wire.py")
    shutil.copy2(onnx, staging / "model.onnx")
    history = export_dir / (wire.HISTORY_INT8 if int8 else wire.HISTORY_GRAPH)
    if history.exists():  # a text tower's graph for rows without a query
        shutil.copy2(history, staging / wire.HISTORY_GRAPH)
    for name in EXPORT_FILES:
        shutil.copy2(export_dir / name, staging / name)
    for name in OPTIONAL_FILES:
        if (export_dir / name).exists():
            shutil.copy2(export_dir / name, staging / name)
