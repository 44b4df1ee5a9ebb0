"""Model versions on disk: numbering, atomic publish, keep N, rollback (no Triton needed)."""
import json
import signal
import subprocess
import sys
import threading

import pytest

from serving.repository import TEMPLATE, ModelRepository, mark_verified
from shopguide.errors import UserError


def fake_export(directory, marker="fp32"):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_text(marker)
    (directory / "model.int8.onnx").write_text(f"{marker}-int8")
    (directory / "item_index.json").write_text(json.dumps(["a", "b"]))
    (directory / "export.json").write_text(json.dumps({"top_k": 2, "max_len": 4}))
    return directory


@pytest.fixture
def repository(tmp_path):
    return ModelRepository(tmp_path / "repo", "next_item")


def test_publish_into_a_new_repository_brings_the_model_config_and_code(repository, tmp_path):
    version = repository.publish(fake_export(tmp_path / "export"))
    assert version == 1
    assert (repository.model_dir / "config.pbtxt").read_text() == (TEMPLATE / "config.pbtxt").read_text()
    files = sorted(p.name for p in (repository.model_dir / "1").iterdir())
    assert files == ["export.json", "item_index.json", "model.onnx", "model.py", "wire.py"]
    assert (repository.model_dir / "1" / "model.py").read_text() == (TEMPLATE / "model.py").read_text()


def test_a_repository_from_before_the_joined_forms_is_upgraded_and_keeps_its_pin_and_graphs(repository, tmp_path):
    for version in (1, 2):
        repository.publish(fake_export(tmp_path / "export", marker=f"graph {version}"))
    mark_verified(repository.model_dir / "1", {})
    repository.pin()
    config = repository.model_dir / "config.pbtxt"
    old_config = config.read_text().replace('name: "HISTORY"', 'name: "OLD"')
    config.write_text(old_config)
    for version in (1, 2):
        (repository.model_dir / str(version) / "wire.py").write_text('REQUEST_ITEMS = "ITEMS"\n')
        (repository.model_dir / str(version) / "model.py").write_text("old\n")
    replaced = repository.upgrade()
    assert replaced == [str(config), str(repository.model_dir / "model.py"),
                        str(repository.model_dir / "1"), str(repository.model_dir / "2")]
    assert 'name: "HISTORY"' in config.read_text() and repository.pinned() == 1
    for version in (1, 2):
        code = repository.model_dir / str(version)
        assert (code / "model.py").read_text() == (TEMPLATE / "model.py").read_text()
        assert "REQUEST_HISTORY" in (code / "wire.py").read_text()
        assert (code / "model.onnx").read_text() == f"graph {version}"
    assert repository.upgrade() == []  # once only


def test_versions_count_up_and_leave_no_staging_directories(repository, tmp_path):
    export = fake_export(tmp_path / "export")
    assert [repository.publish(export) for _ in range(3)] == [1, 2, 3]
    assert repository.versions() == [1, 2, 3]
    assert repository.latest() == 3
    assert not [p for p in repository.model_dir.iterdir() if p.name.startswith(".")]


def test_publish_keeps_only_the_newest_n(repository, tmp_path):
    export = fake_export(tmp_path / "export")
    for _ in range(5):
        repository.publish(export, keep=2)
    assert repository.versions() == [4, 5]


def test_int8_publish_serves_the_quantised_file(repository, tmp_path):
    version = repository.publish(fake_export(tmp_path / "export", marker="m"), int8=True)
    assert (repository.model_dir / str(version) / "model.onnx").read_text() == "m-int8"


@pytest.mark.parametrize("int8", [False, True])
def test_a_tower_export_brings_its_history_graph_and_a_derived_version_shares_it(repository, tmp_path, int8):
    export = fake_export(tmp_path / "export", marker="m")
    (export / "history.onnx").write_text("history")
    (export / "history.int8.onnx").write_text("history-int8")
    version = repository.publish(export, int8=int8)
    assert (repository.model_dir / str(version) / "history.onnx").read_text() == ("history-int8" if int8 else "history")
    derived = repository.derive(version, {"added_items.json": b"[]"})
    assert (derived / "history.onnx").read_text() == (repository.model_dir / str(version) / "history.onnx").read_text()


def test_an_incomplete_export_is_refused_and_nothing_is_published(repository, tmp_path):
    export = fake_export(tmp_path / "export")
    (export / "item_index.json").unlink()
    with pytest.raises(UserError, match="item_index.json"):
        repository.publish(export)
    assert repository.versions() == []
    assert not [p for p in repository.model_dir.iterdir() if p.name.startswith(".")]


def test_rollback_retires_the_newest_and_its_number_is_not_reused(repository, tmp_path):
    export = fake_export(tmp_path / "export")
    repository.publish(export)
    repository.publish(export)
    assert repository.rollback() == 1
    assert repository.versions() == [1]
    assert repository.retired() == [2]
    assert repository.publish(export) == 3


def test_rollback_needs_a_previous_version(repository, tmp_path):
    repository.publish(fake_export(tmp_path / "export"))
    with pytest.raises(UserError, match="nothing to roll back"):
        repository.rollback()
    assert repository.versions() == [1]


def test_a_number_taken_by_a_concurrent_publisher_is_skipped(repository, tmp_path, monkeypatch):
    export = fake_export(tmp_path / "export")
    repository.publish(export)
    theirs = repository.model_dir / "2"  # another publisher renamed its version into place ...
    theirs.mkdir()
    (theirs / "model.onnx").write_text("theirs")
    monkeypatch.setattr(ModelRepository, "versions", lambda self: [1])  # ... after we listed versions
    assert repository.publish(export, keep=5) == 3
    assert (theirs / "model.onnx").read_text() == "theirs"


def verified_publish(repository, export):
    """A version as serving.rollout publishes it: marked verified before it gets its number."""
    staging = repository.stage(export)
    mark_verified(staging, {})
    return repository.claim(staging)


def test_the_live_version_is_the_newest_verified_one_and_config_pins_it(repository, tmp_path):
    export = fake_export(tmp_path / "export")
    repository.publish(export)
    assert repository.live() == 1 and repository.pin() == 1 and repository.pinned() is None  # none verified yet
    assert verified_publish(repository, export) == 2
    repository.publish(export, keep=None)  # 3: never verified
    assert repository.verified() == [2] and repository.live() == repository.pin() == repository.pinned() == 2
    config = (repository.model_dir / "config.pbtxt").read_text()
    assert "version_policy: { specific: { versions: [2] } }" in config and "latest" not in config.split("version_policy")[1]
    assert repository.retire_unverified() == [3] and repository.retired() == [3]


def test_rollback_goes_to_the_previous_verified_version_and_unpins_when_none_is_left(repository, tmp_path):
    export = fake_export(tmp_path / "export")
    repository.publish(export)
    verified_publish(repository, export)
    verified_publish(repository, export)
    assert repository.rollback() == 2 and repository.pin() == 2
    assert repository.rollback() == 1 and repository.pin() == 1 and repository.pinned() is None
    assert (repository.model_dir / "config.pbtxt").read_text() == (TEMPLATE / "config.pbtxt").read_text()


def test_prune_keeps_the_live_version_and_what_is_newer(repository, tmp_path):
    export = fake_export(tmp_path / "export")
    for _ in range(3):
        verified_publish(repository, export)
    repository.publish(export, keep=None)  # 4: never verified
    assert repository.prune(2) == [1] and repository.versions() == [2, 3, 4]


def test_clean_removes_what_a_killed_publish_left(repository, tmp_path):
    staging = repository.stage(fake_export(tmp_path / "export"))
    assert repository.clean() == [staging] and not staging.exists()


def test_one_publisher_at_a_time_and_a_killed_one_lets_go(repository, tmp_path):
    """Two processes sharing the repository (the fine-tune job, `shopguide new-items`): the second
    waits for the first's lock, and gets it when the first is SIGKILLed mid-publish."""
    repository.publish(fake_export(tmp_path / "export"))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from serving.repository import ModelRepository\n"
        f"with ModelRepository({str(repository.root)!r}, 'next_item').publishing():\n"
        "    print('held', flush=True); time.sleep(600)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        acquired = threading.Event()

        def publish():
            with repository.publishing():
                acquired.set()
        waiter = threading.Thread(target=publish)
        waiter.start()
        assert not acquired.wait(timeout=1.0)  # blocked on the holder's lock
        holder.send_signal(signal.SIGKILL)
        assert acquired.wait(timeout=10.0)
        waiter.join()
    finally:
        holder.kill()
        holder.wait()
