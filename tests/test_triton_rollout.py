"""Zero-downtime rollout: under a steady stream of requests, publishing a version, a version that
fails to load, and a rollback cause no failed request; a restarted Triton serves the newest
verified version, not a broken newer one."""
import asyncio
import shutil

import pytest

from serving.client import TritonClient, server_state
from serving.repository import ModelRepository
from serving.rollout import publish, recover, rollback
from serving.triton import LocalTriton
from shopguide.errors import UserError
from tests.fixtures.triton import triton_settings

pytestmark = pytest.mark.triton


class Stream:
    """Calls Triton back to back until stopped; keeps every answer's version and every failure."""

    def __init__(self, url):
        self.client = TritonClient(url)
        self.versions, self.failures = [], []
        self.running = True

    async def run(self, sessions):
        while self.running:
            try:
                _, version = await self.client.recommend(sessions, timeout_s=10.0)
                self.versions.append(version)
            except Exception as exc:  # any failure at all is what this test looks for
                self.failures.append(exc)

    async def during(self, change):
        """Run a blocking repository change while requests flow; the answers seen meanwhile."""
        before = len(self.versions)
        result = await asyncio.get_running_loop().run_in_executor(None, change)
        await asyncio.sleep(0.2)
        return result, len(self.versions) - before


def broken_export(source, target):
    shutil.copytree(source, target)
    (target / "model.onnx").write_bytes(b"not an onnx model")
    return target


def test_publish_a_failed_version_and_rollback_while_requests_flow(triton, tmp_path):
    settings, before = triton.settings, triton.repository.latest()
    broken = broken_export(triton.export_dir, tmp_path / "broken")

    async def scenario():
        stream = Stream(triton.url)
        callers = [asyncio.create_task(stream.run([["a"], []] * 8)) for _ in range(2)]
        await asyncio.sleep(0.5)
        try:
            (published, serving), flowed_publish = await stream.during(lambda: publish(settings, triton.export_dir))
            failed, flowed_failure = await stream.during(lambda: _error_of(lambda: publish(settings, broken)))
            (restored, serving_after), flowed_rollback = await stream.during(lambda: rollback(settings))
        finally:
            stream.running = False
            await asyncio.gather(*callers)
            await stream.client.close()
        assert serving == published > before  # numbers are never reused: others may have published
        assert "failed its probe" in failed
        assert serving_after == restored == before
        assert min(flowed_publish, flowed_failure, flowed_rollback) > 0
        return stream, published

    stream, published = asyncio.run(scenario())
    assert stream.failures == []
    assert set(stream.versions) == {before, published}
    assert stream.versions[0] == stream.versions[-1] == before
    assert triton.repository.retired()[-1] == published  # the broken export never got a number
    assert max(triton.repository.versions()) < published
    assert not list(triton.repository.model_dir.glob(".publish-*"))
    assert server_state(triton.url).serving == [before]


def test_a_restarted_triton_serves_the_newest_verified_version(tiny_export, tmp_path):
    settings = triton_settings(tmp_path)
    models = ModelRepository(settings.model_repository, settings.model_name)
    models.publish(tiny_export)  # a first version, before Triton ever ran: serves unverified
    server = LocalTriton(settings)
    server.start()
    try:
        verified, _ = publish(settings, tiny_export)
        broken = models.publish(broken_export(tiny_export, tmp_path / "broken"), keep=None)  # by hand
        server.stop()
        server.start()
        restarted = server_state(settings.triton_grpc).serving
        done = recover(settings)
        serving = server_state(settings.triton_grpc).serving
    finally:
        server.stop()
    assert broken == verified + 1 == 3
    assert restarted == serving == [verified]
    assert models.pinned() == verified
    assert done == ["retired version 3 (not verified)"] and models.retired() == [3]


def _error_of(call):
    with pytest.raises(UserError) as error:
        call()
    return str(error.value)
