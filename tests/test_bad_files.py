"""A corrupt checkpoint and a model version without its export.json stop a command with one line
naming the file, in our code and in the served model's own loader."""
from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from console.cli import main
from serving import wire
from serving.repository import TEMPLATE, export_meta
from shopguide.config import Settings
from shopguide.errors import UserError


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory) -> Path:
    from trainer.checkpoint import Checkpoint
    from trainer.item_index import ItemIndex
    from trainer.model import ModelArgs, NextItemModel

    model = NextItemModel(ModelArgs(num_ids=4, max_len=4, hidden=8, layers=1, heads=1))
    return Checkpoint(model, ItemIndex(["a", "b", "c"])).save(tmp_path_factory.mktemp("ckpt") / "checkpoint.pt")


def corruptions(good: bytes) -> dict[str, bytes]:
    return {"garbage": b"not a checkpoint at all", "truncated": good[: len(good) // 2], "empty": b""}


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty"])
def test_a_corrupt_checkpoint_is_one_line_naming_the_file(checkpoint_file, tmp_path, kind):
    from trainer.checkpoint import Checkpoint

    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(corruptions(checkpoint_file.read_bytes())[kind])
    with pytest.raises(UserError) as error:
        Checkpoint.load(bad)
    assert str(error.value).startswith(f"{bad}: not a readable checkpoint") and "\n" not in str(error.value)


def test_a_checkpoint_missing_its_fields_is_one_line(tmp_path):
    import torch

    from trainer.checkpoint import Checkpoint

    bad = tmp_path / "checkpoint.pt"
    torch.save({"model_args": {"num_ids": 4}}, bad)
    with pytest.raises(UserError, match=r"not a readable checkpoint \('state_dict'\)"):
        Checkpoint.load(bad)


def test_export_of_a_corrupt_checkpoint_prints_one_line(tmp_path, capsys):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"\x80\x04garbage")
    assert main(["export", "--checkpoint", str(bad), "--out", str(tmp_path / "export")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"shopguide export: error: {bad}: not a readable checkpoint") and err.count("\n") == 1


@pytest.mark.parametrize("content, words", [
    (None, "export.json: no such file"),
    ("{not json", "export.json: not readable JSON"),
    ('{"top_k": 5}', "export.json: expected a JSON object with top_k and max_len"),
])
def test_export_meta_names_the_file(tmp_path, content, words):
    if content is not None:
        (tmp_path / "export.json").write_text(content)
    with pytest.raises(UserError, match=words) as error:
        export_meta(tmp_path)
    assert str(error.value).startswith(str(tmp_path / "export.json")) and "\n" not in str(error.value)


def repository_with_bare_version(tmp_path) -> Settings:
    version = tmp_path / "repo" / "next_item" / "1"
    version.mkdir(parents=True)
    (version / "item_index.json").write_text('["a"]')
    return Settings(model_repository=tmp_path / "repo", home=tmp_path / "home")


def test_model_list_with_a_version_without_export_json_prints_one_line(tmp_path, capsys, monkeypatch):
    settings = repository_with_bare_version(tmp_path)
    monkeypatch.setenv("SHOPGUIDE_TRITON_GRPC", "127.0.0.1:1")
    assert main(["model", "list", "--model-repository", str(settings.model_repository)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "next_item/1/export.json: no such file" in err


def test_finetune_from_a_version_without_export_json_is_one_line(tmp_path):
    from trainer.job import live_checkpoint

    with pytest.raises(UserError, match=r"next_item/1/export.json: no such file"):
        live_checkpoint(repository_with_bare_version(tmp_path))


@pytest.fixture
def served_model(monkeypatch):
    """model_repository/next_item/model.py with a stand-in for Triton's backend module."""
    class TritonModelException(Exception):
        pass

    numpy_types = {"TYPE_STRING": np.object_, "TYPE_FP32": np.float32}
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils",
                        types.SimpleNamespace(TritonModelException=TritonModelException,
                                              triton_string_to_numpy=numpy_types.get))
    monkeypatch.setitem(sys.modules, "wire", wire)  # a published version carries a copy beside model.py
    spec = importlib.util.spec_from_file_location("served_next_item", TEMPLATE / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("content, words", [(None, "FileNotFoundError"), ("[1,", "JSONDecodeError"),
                                            ('{"top_k": 5}', "no max_len")])
def test_triton_refuses_a_version_without_readable_export_json_in_one_line(served_model, tmp_path, content, words):
    if content is not None:
        (tmp_path / "1").mkdir()
        (tmp_path / "1" / "export.json").write_text(content)
    config = {"input": [{"name": "ITEMS"}], "output": [{"name": "ITEMS", "data_type": "TYPE_STRING"},
                                                       {"name": "SCORES", "data_type": "TYPE_FP32"}]}
    args = {"model_config": json.dumps(config), "model_repository": str(tmp_path), "model_version": "1"}
    with pytest.raises(served_model.pb_utils.TritonModelException) as error:
        served_model.TritonPythonModel().initialize(args)
    assert str(error.value).startswith(str(tmp_path / "1" / "export.json")) and words in str(error.value)
