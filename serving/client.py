"""Talking to Triton: the async recommendation client used inside the worker's event loop, and the
small synchronous probes the launcher and the CLI use (state, reload).

The wire contract (tensor names, padding) is serving/wire.py.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from serving.wire import ID_SEPARATOR, REQUEST_HISTORY, REQUEST_QUERY, RESPONSE_RANKED, RESPONSE_SCORES, SHOP_PADDING

PROBE_TIMEOUT_S = 2.0
RECONNECT_BACKOFF_MAX_MS = 1000

Recommendation = tuple[list[str], list[float]]


class ServingError(Exception):
    """A Triton call that gave no answer; `cause` is timeout, unavailable or error (a metrics label)."""

    def __init__(self, cause: str, message: str):
        super().__init__(message)
        self.cause = cause


_LENGTH = struct.Struct("<I")  # a BYTES element's length on the wire
_SEPARATOR = ID_SEPARATOR.decode()


def encode(sessions: Sequence[Sequence]) -> tuple[list[int], bytes]:
    """Sessions of shop ids (str or int) -> the HISTORY tensor's shape, [rows, 1], and its BYTES wire
    form (`bytes_tensor`): each row its ids, oldest first, joined by wire.ID_SEPARATOR."""
    return [len(sessions), 1], bytes_tensor([_SEPARATOR.join(map(str, items)).encode() for items in sessions])


def encode_queries(queries: Sequence[str] | None, rows: int) -> tuple[list[int], bytes]:
    """Search texts (None: b"" for every row) -> the QUERY tensor's shape, [rows, 1], and wire form."""
    texts = [(query or "").encode() for query in queries] if queries is not None else [SHOP_PADDING] * rows
    if len(texts) != rows:
        raise ValueError(f"{len(texts)} queries for {rows} sessions")
    return [rows, 1], bytes_tensor(texts)


def bytes_tensor(elements: Sequence[bytes]) -> bytes:
    """Triton's BYTES wire form of a tensor's elements in row-major order: each one's length (4 bytes,
    little-endian), then the element. tritonclient's serialize_byte_tensor makes the same bytes from
    a numpy array, walking it element by element: 80 us per history of a worker's call, about
    what the worker's own work per event costs (README, Headroom)."""
    parts = []
    for element in elements:
        parts.append(_LENGTH.pack(len(element)))
        parts.append(element)
    return b"".join(parts)


def bytes_elements(raw: bytes) -> list[bytes]:
    """The elements of a BYTES tensor's wire form, in order (bytes_tensor read back)."""
    elements, at, end = [], 0, len(raw)
    while at < end:
        (size,) = _LENGTH.unpack_from(raw, at)
        at += 4
        elements.append(raw[at:at + size])
        at += size
    return elements


def infer_inputs(sessions: Sequence[Sequence], queries: Sequence[str] | None = None) -> list:
    """The HISTORY and QUERY inputs of one call (tritonclient's gRPC InferInput, which its sync and
    asyncio clients share), their content already in wire form. tritonclient has no public way to
    hand it over: its own set_data_from_numpy stores the same bytes in `_raw_content`
    (tests/test_client.py holds the two to the same request)."""
    from tritonclient.grpc import InferInput

    inputs = []
    for name, (shape, content) in ((REQUEST_HISTORY, encode(sessions)), (REQUEST_QUERY, encode_queries(queries, len(sessions)))):
        inputs.append(InferInput(name, shape, "BYTES"))
        inputs[-1]._raw_content = content
    return inputs


def infer_outputs() -> list:
    """The outputs a call asks for: the joined answers and their scores (decode reads them)."""
    from tritonclient.grpc import InferRequestedOutput

    return [InferRequestedOutput(RESPONSE_RANKED), InferRequestedOutput(RESPONSE_SCORES)]


def decode(response) -> list[Recommendation]:
    """Per row of a ModelInferResponse: shop ids and scores, best first; padding answers (b"") dropped."""
    outputs = {output.name: (list(output.shape), raw) for output, raw in zip(response.outputs, response.raw_output_contents)}
    (rows, width), raw_scores = outputs[RESPONSE_SCORES]
    scores = np.frombuffer(raw_scores, dtype=np.float32).reshape(rows, width).tolist()
    answers = []
    for joined, row_scores in zip(bytes_elements(outputs[RESPONSE_RANKED][1]), scores):
        row_items = joined.decode().split(_SEPARATOR)
        if "" in row_items:
            row_scores = [score for item, score in zip(row_items, row_scores) if item]
            row_items = [item for item in row_items if item]
        answers.append((row_items, row_scores))
    return answers


def _serving_error(exc: Exception) -> ServingError:
    status = str(getattr(exc, "status", lambda: "")() or "")
    if "DEADLINE_EXCEEDED" in status:
        return ServingError("timeout", f"Triton did not answer in time: {exc}")
    if "UNAVAILABLE" in status:
        return ServingError("unavailable", f"Triton is unreachable: {exc}")
    if "NOT_FOUND" in status:
        return ServingError("unavailable", f"Triton serves no version of the model: {exc}")
    return ServingError("error", f"Triton answered with an error: {exc}")


class TritonClient:
    """Async gRPC client of the next-item model: one Triton call per micro-batch of users.

    The gRPC channel binds to the event loop it is created in, so it is made on first use inside
    the running loop (the Faust worker's), not in __init__.
    """

    def __init__(self, url: str, model_name: str = "next_item"):
        self.url = url
        self.model_name = model_name
        self._client = None

    def _connection(self):
        if self._client is None:
            from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, aio

            self._client = aio.InferenceServerClient(self.url, channel_args=[
                ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
                ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
                # gRPC's reconnect backoff grows to 2 minutes by default; cap it so answers from
                # the model resume within a second or so of Triton coming back.
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MAX_MS),
            ])
        return self._client

    async def recommend(self, sessions: Sequence[Sequence], timeout_s: float,
                        queries: Sequence[str] | None = None) -> tuple[list[Recommendation], int | None]:
        """(items, scores) per session, best first, and the model version that answered. `queries`
        is each session's search text ("" for none); it is always sent, so that every call of the
        worker can share a dynamic batch (Triton batches only requests with the same inputs)."""
        if not sessions:
            return [], None
        from tritonclient.utils import InferenceServerException

        try:
            result = await self._connection().infer(self.model_name, infer_inputs(sessions, queries), outputs=infer_outputs(),
                                                    client_timeout=timeout_s)
        except InferenceServerException as exc:
            raise _serving_error(exc) from exc
        response = result.get_response()
        return decode(response), int(response.model_version)

    async def ready(self, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
        """True when the server is up and some version of the model can answer."""
        from tritonclient.utils import InferenceServerException

        try:
            return await self._connection().is_model_ready(self.model_name, client_timeout=timeout_s)
        except InferenceServerException:
            return False

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


@dataclass(frozen=True)
class ServerState:
    live: bool = False
    ready: bool = False
    versions: dict[str, str] = field(default_factory=dict)  # version -> state, for one model

    @property
    def serving(self) -> list[int]:
        return sorted(int(v) for v, state in self.versions.items() if state == "READY")


def server_state(url: str, model_name: str = "next_item") -> ServerState:
    """A synchronous probe; a server that does not answer is simply not live."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    try:
        with grpcclient.InferenceServerClient(url) as client:
            live = client.is_server_live(client_timeout=PROBE_TIMEOUT_S)
            ready = client.is_server_ready(client_timeout=PROBE_TIMEOUT_S)
            index = client.get_model_repository_index(as_json=True, client_timeout=PROBE_TIMEOUT_S)
    except InferenceServerException:
        return ServerState()
    versions = {m["version"]: m.get("state", "") for m in index.get("models", [])
                if m["name"] == model_name and "version" in m}
    return ServerState(live, ready, versions)


def reload(url: str, model_name: str, timeout_s: float = 120.0) -> list[int]:
    """Ask Triton to load the model's newest version (the old one serves until it is ready)."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from shopguide.errors import UserError

    try:
        with grpcclient.InferenceServerClient(url) as client:
            client.load_model(model_name, client_timeout=timeout_s)
    except InferenceServerException as exc:
        raise UserError(f"Triton at {url} could not load {model_name}: {reason(exc)}") from None
    return server_state(url, model_name).serving


def reason(exc: Exception) -> str:
    """A Triton error's first line (drops the model's Python traceback)."""
    message = exc.message() if hasattr(exc, "message") else ""
    return (message or str(exc)).splitlines()[0]
