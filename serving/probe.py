"""Asking Triton to prove a model version before it may serve.

`verify` loads a version's files (a staging directory, before the version has a number) into
Triton as a model of their own, `<model>-probe`, sent in the load request itself: nothing on
disk names it, so a restarted Triton never loads it and shop traffic never reaches it. It asks
that model for the next items of a session made of the version's own items and of a shopper with
only a search query (a version with a text tower reads it; others ignore it), checks the answer
and unloads it. `ask` is the same request to any loaded model and version.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from serving.client import decode, infer_inputs, infer_outputs, reason
from serving.wire import ADDED_ITEMS, ADDED_VECTORS, HISTORY_GRAPH
from shopguide.errors import UserError

SUFFIX = "-probe"
SERVED_FILES = ("model.py", "wire.py", "model.onnx", "item_index.json", "export.json")
TOWER_FILES = ("tokenizer.json", HISTORY_GRAPH, ADDED_ITEMS, ADDED_VECTORS)  # a version with a text tower (and new items)
SESSION_ITEMS = 3
QUERY = "gift for a child"
LOAD_TIMEOUT_S = 120.0


def probe_name(model_name: str) -> str:
    return f"{model_name}{SUFFIX}"


def verify(settings, directory: Path) -> dict:
    """Load `directory`'s files as the probe model, ask it, unload it; what it answered."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    name = probe_name(settings.model_name)
    config = _config_json(Path(directory).parent / "config.pbtxt", name)
    files = {f"file:1/{file}": (Path(directory) / file).read_bytes() for file in SERVED_FILES}
    files.update({f"file:1/{file}": (Path(directory) / file).read_bytes() for file in TOWER_FILES
                  if (Path(directory) / file).exists()})
    try:
        with grpcclient.InferenceServerClient(settings.triton_grpc) as client:
            client.load_model(name, config=config, files=files, client_timeout=LOAD_TIMEOUT_S)
            try:
                return ask(client, name, 1, directory)
            finally:
                client.unload_model(name)
    except InferenceServerException as exc:
        raise UserError(f"the new version failed its probe in Triton at {settings.triton_grpc}: {reason(exc)}") from None


def ask(client, name: str, version: int, directory: Path) -> dict:
    """One request to `name` version `version`: a session of the version's first items, and an
    empty one with a query; the answer must name that version and hold known items, best first."""
    index = [str(item) for item in json.loads((Path(directory) / "item_index.json").read_text())]
    added = Path(directory) / ADDED_ITEMS
    known = set(index) | ({str(item) for item in json.loads(added.read_text())} if added.exists() else set())
    session = index[:SESSION_ITEMS]
    inputs = infer_inputs([session, []], ["", QUERY])
    result = client.infer(name, inputs, model_version=str(version), outputs=infer_outputs(), client_timeout=LOAD_TIMEOUT_S)
    answers = decode(result.get_response())
    problem = _problem(answers, known, int(result.get_response().model_version), version)
    if problem:
        raise UserError(f"{name} version {version} answered the probe wrongly: {problem}")
    return {"session": session, "answer": answers[0][0][:5]}


def unload(settings) -> None:
    """Unload a probe model a killed publish left loaded (nothing when there is none)."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    try:
        with grpcclient.InferenceServerClient(settings.triton_grpc) as client:
            if client.is_model_ready(probe_name(settings.model_name)):
                client.unload_model(probe_name(settings.model_name))
    except InferenceServerException:
        pass


def _problem(answers: list, known: set[str], answered: int, version: int) -> str | None:
    if answered != version:
        return f"version {answered} answered"
    if len(answers) != 2 or not all(items and len(items) == len(scores) for items, scores in answers):
        return f"answers of {[len(items) for items, _ in answers]} items for 2 sessions"
    if any(item not in known for items, _ in answers for item in items):
        return "items outside its item index"
    scores = [score for _, row in answers for score in row]
    if not all(math.isfinite(score) for score in scores) or any(np.diff(row).max(initial=0) > 0 for _, row in answers):
        return "scores not finite or not best first"
    return None


def _config_json(config_file: Path, name: str) -> str:
    """The repository's config.pbtxt for the probe model: its own name, its one version."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse(config_file.read_text(), model_config_pb2.ModelConfig())
    config.name = name
    config.version_policy.latest.num_versions = 1
    return json_format.MessageToJson(config, preserving_proto_field_name=True)
