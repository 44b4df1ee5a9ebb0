"""Publishing and rolling back against a running Triton: only a version Triton has loaded and
that answered a probe ever serves.

A publish stages the export beside the versions, has Triton load the staged files as a probe
model and answer a request (serving/probe.py), marks the staging directory verified and only
then renames it to the next number: a version that fails never gets one. `serve` then pins the
live version (the newest verified) in config.pbtxt, has Triton load it (the old version serves
until the new one is ready) and asks it once more; a version that fails there is retired and
the one before it serves. Old versions are pruned only after the new one serves.

A kill at any step leaves the staged directory (removed by `recover`), a probe model (unloaded
by `recover`), or a verified version that is not pinned or loaded yet (`recover` serves it); a
restarted Triton loads the pinned version, never a newer one.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from serving.client import reload, server_state
from serving.repository import ModelRepository, mark_verified
from shopguide.config import Settings
from shopguide.errors import UserError
from shopguide.process import kill_point


def publish(settings: Settings, export_dir: Path, int8: bool = False) -> tuple[int, int | None]:
    """(the published version, the version Triton serves now, or None if Triton is not running)."""
    models = ModelRepository.from_settings(settings)
    with models.publishing():
        if not _running(settings):
            return _publish_unverified(settings, models, export_dir, int8), None
        return publish_staged(settings, models.stage(export_dir, int8))


def publish_staged(settings: Settings, staging: Path) -> tuple[int, int | None]:
    """`publish` of a staging directory (ModelRepository.stage or derive), which it consumes; the
    caller holds ModelRepository.publishing from before it staged."""
    from serving.probe import verify

    models = ModelRepository.from_settings(settings)
    try:
        mark_verified(staging, verify(settings, staging))
        kill_point("publish-staged")
        version = models.claim(staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    kill_point("publish-renamed")
    serving = serve(settings)
    models.prune(settings.model_keep)
    return version, serving


def rollback(settings: Settings) -> tuple[int, int | None]:
    """(the version that is live again, the version Triton serves now, or None if not running)."""
    models = ModelRepository.from_settings(settings)
    with models.publishing():
        return models.rollback(), serve(settings)


def serve(settings: Settings) -> int | None:
    """Pin the live version and have Triton serve it; a verified version that fails to load or
    to answer is retired and the one before it serves. None when Triton is not running."""
    models = ModelRepository.from_settings(settings)
    failures = []
    while True:
        live = models.pin()
        if live is None or not _running(settings):
            return None
        try:
            _load(settings, models, live)
            break
        except UserError as exc:
            if live not in models.verified():  # a repository with none verified: nothing to fall back to
                raise
            models.retire(live)
            failures.append(f"version {live} was retired because it failed to load ({exc})")
    if failures:
        raise UserError(f"{'; '.join(failures)}; Triton serves version {live}")
    return live


def recover(settings: Settings) -> list[str]:
    """Tidy up after a killed publish: staging directories removed, a probe model unloaded,
    versions newer than the live one retired, Triton serving the live version. What it did."""
    models = ModelRepository.from_settings(settings)
    with models.publishing():
        return _recover(settings, models)


def _recover(settings: Settings, models: ModelRepository) -> list[str]:
    from serving.probe import unload

    done = [f"removed {path.name}" for path in models.clean()]
    if not models.versions():
        return done
    done += [f"retired version {version} (not verified)" for version in models.retire_unverified()]
    if _running(settings):
        unload(settings)
        before = server_state(settings.triton_grpc, settings.model_name).serving
        try:
            if before != [serve(settings)]:
                done.append(f"Triton serves version {models.live()} (was {before or 'none'})")
        except UserError as exc:
            done.append(str(exc))
    else:
        models.pin()
    return done


def _publish_unverified(settings: Settings, models: ModelRepository, export_dir: Path, int8: bool) -> int:
    """Without Triton only a repository's first versions may be published: none can be probed,
    and none verified exists that they would push aside at Triton's next start."""
    if models.verified():
        raise UserError(f"Triton at {settings.triton_grpc} is not running: a version is published only once "
                        "Triton has loaded it and it answered a probe (shopguide triton start, then publish)")
    version = models.publish(export_dir, keep=settings.model_keep, int8=int8)
    models.pin()
    return version


def _load(settings: Settings, models: ModelRepository, version: int) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from serving.client import reason
    from serving.probe import ask

    serving = reload(settings.triton_grpc, settings.model_name)
    if serving != [version]:
        raise UserError(f"Triton serves {serving or 'no version'}, not version {version}")
    try:
        with grpcclient.InferenceServerClient(settings.triton_grpc) as client:
            ask(client, settings.model_name, version, models.model_dir / str(version))
    except InferenceServerException as exc:
        raise UserError(f"version {version} did not answer: {reason(exc)}") from None


def _running(settings: Settings) -> bool:
    return server_state(settings.triton_grpc, settings.model_name).live
