"""The local Triton launcher and the served model's behaviour beyond plain answers."""
import asyncio
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from serving.client import ServingError, TritonClient, server_state
from serving.rollout import publish
from serving.triton import LocalTriton, prepare_backends, wheel_dir
from console.cli import main
from shopguide.errors import UserError
from tests.fixtures.triton import triton_settings

pytestmark = pytest.mark.triton


def infer(url, array, datatype, query=None):
    inputs = [grpcclient.InferInput("ITEMS", list(array.shape), datatype)]
    inputs[0].set_data_from_numpy(array)
    if query is not None:
        inputs.append(grpcclient.InferInput("QUERY", list(query.shape), "BYTES"))
        inputs[1].set_data_from_numpy(query)
    with grpcclient.InferenceServerClient(url) as client:
        return client.infer("next_item", inputs)


def test_wrong_dtype_or_shape_is_refused_and_the_server_keeps_answering(triton):
    with pytest.raises(InferenceServerException, match="data-type"):
        infer(triton.url, np.zeros((2, 3), dtype=np.int64), "INT64")
    with pytest.raises(InferenceServerException, match="shape"):
        infer(triton.url, np.array([b"a", b"b"], dtype=np.object_), "BYTES")
    result = infer(triton.url, np.array([[b"", b""]], dtype=np.object_), "BYTES")
    assert result.as_numpy("ITEMS").shape[0] == 1
    assert server_state(triton.url).ready


def test_the_query_input_is_optional_and_a_misshapen_one_is_refused(triton):
    rows = np.array([[b"", b"x"], [b"", b""]], dtype=np.object_)
    without = infer(triton.url, rows, "BYTES")
    empty = infer(triton.url, rows, "BYTES", query=np.array([[b""], [b""]], dtype=np.object_))
    assert empty.as_numpy("ITEMS").tolist() == without.as_numpy("ITEMS").tolist()
    with pytest.raises(InferenceServerException, match="batch size does not match"):
        infer(triton.url, rows, "BYTES", query=np.array([[b"a"]], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="shape"):
        infer(triton.url, rows, "BYTES", query=np.array([[b"a", b"b"]] * 2, dtype=np.object_))
    assert infer(triton.url, rows, "BYTES").as_numpy("ITEMS").tolist() == without.as_numpy("ITEMS").tolist()


def test_a_zero_width_request_answers_like_a_new_user(triton):
    empty = infer(triton.url, np.empty((1, 0), dtype=np.object_), "BYTES")
    padding = infer(triton.url, np.array([[b""]], dtype=np.object_), "BYTES")
    assert empty.as_numpy("ITEMS").tolist() == padding.as_numpy("ITEMS").tolist()


def test_the_metrics_port_serves_triton_inference_counters(triton):
    infer(triton.url, np.array([[b""]], dtype=np.object_), "BYTES")
    text = urllib.request.urlopen(triton.metrics_url, timeout=5).read().decode()
    lines = [line for line in text.splitlines() if line.startswith('nv_inference_request_success{model="next_item"')]
    assert lines and float(lines[0].rsplit(" ", 1)[1]) >= 1


def test_the_backend_stub_copy_is_idempotent():
    backends = prepare_backends(wheel_dir())
    assert prepare_backends(wheel_dir()) == backends
    assert (backends / "python" / "triton_python_backend_stub").stat().st_size > 0


def test_starts_empty_serves_what_is_published_and_a_client_outlives_a_restart(tmp_path, tiny_export):
    settings = triton_settings(tmp_path)
    server = LocalTriton(settings)

    async def lifecycle():
        client = TritonClient(settings.triton_grpc)
        server.start()
        try:
            state = server_state(settings.triton_grpc)
            assert state.live and state.serving == []
            assert not await client.ready()
            with pytest.raises(ServingError) as no_model:
                await client.recommend([[]], timeout_s=2.0)
            assert no_model.value.cause == "unavailable"
            assert publish(settings, tiny_export) == (1, 1)
            assert (await client.recommend([[]], timeout_s=10.0))[1] == 1
            assert server.stop()
            assert server.pid() is None and not server_state(settings.triton_grpc).live
            with pytest.raises(ServingError):
                await client.recommend([[]], timeout_s=2.0)
            server.start()  # now with a version on disk: loaded at start
            assert (await answer_again(client))[1] == 1
        finally:
            server.stop()
            await client.close()
    asyncio.run(lifecycle())


async def answer_again(client, attempts=60):
    """The same client, without being rebuilt, answers again once its channel reconnects."""
    for _ in range(attempts - 1):
        try:
            return await client.recommend([[]], timeout_s=2.0)
        except ServingError:
            await asyncio.sleep(0.5)
    return await client.recommend([[]], timeout_s=2.0)


def test_a_second_start_from_the_same_home_is_refused(triton):
    with pytest.raises(UserError, match="already runs"):
        LocalTriton(triton.settings).start()


def test_status_and_model_list_name_the_served_version(triton, capsys):
    flags = ["--grpc", triton.url, "--model-repository", str(triton.settings.model_repository)]
    assert main(["triton", "status", "--home", str(triton.settings.home), *flags]) == 0
    assert main(["model", "list", *flags]) == 0
    out = capsys.readouterr().out
    version = triton.repository.latest()
    assert f"next_item version {version} serving" in out
    assert f"{version:>5}  " in out and "<- Triton serves this" in out
