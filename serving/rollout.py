"""Publishing and rolling back against a running Triton: change the repository, then have Triton
load the newest version (the old one serves until the new one is ready).

A version that fails to load is retired at once, and old versions are pruned only after the new
one serves, so a bad export never leaves the repository without a version that works.
"""
from __future__ import annotations

from pathlib import Path

from serving.client import reload, server_state
from serving.repository import ModelRepository
from shopguide.config import Settings
from shopguide.errors import UserError


def publish(settings: Settings, export_dir: Path, int8: bool = False) -> tuple[int, int | None]:
    """(the published version, the version Triton serves now, or None if Triton is not running)."""
    models = ModelRepository.from_settings(settings)
    version = models.publish(export_dir, keep=None, int8=int8)
    serving = None
    if _running(settings):
        try:
            serving = _newest(reload(settings.triton_grpc, settings.model_name))
        except UserError as exc:
            models.retire(version)
            still = _newest(server_state(settings.triton_grpc, settings.model_name).serving)
            raise UserError(f"version {version} was retired because it failed to load ({exc}); "
                            f"Triton serves {'version ' + str(still) if still else 'no version'}") from None
    models.prune(settings.model_keep)
    return version, serving


def rollback(settings: Settings) -> tuple[int, int | None]:
    """(the version that is newest again, the version Triton serves now, or None if not running)."""
    version = ModelRepository.from_settings(settings).rollback()
    if not _running(settings):
        return version, None
    return version, _newest(reload(settings.triton_grpc, settings.model_name))


def _running(settings: Settings) -> bool:
    return server_state(settings.triton_grpc, settings.model_name).live


def _newest(versions: list[int]) -> int | None:
    return versions[-1] if versions else None
