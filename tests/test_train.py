"""Split, batching, the training loop and the train/eval commands (on real slices of amazon-toys)."""
import random

import pytest
import torch

from console.cli import main
from trainer import data
from trainer.checkpoint import Checkpoint
from trainer.evaluate import evaluate_popularity, ranks, summarise

pytestmark = pytest.mark.slow  # the session's tiny model trains first


def test_leave_one_out_holds_back_the_last_two_items():
    split = data.leave_one_out([[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]])
    assert split.train == [[1, 2, 3], [6, 7], [8]]
    assert split.valid_inputs == [[1, 2, 3], [8]] and split.valid_targets == [4, 9]
    assert split.test_inputs == [[1, 2, 3, 4], [8, 9]] and split.test_targets == [5, 10]


def test_training_windows_keep_every_pair_of_long_histories():
    seq = list(range(1, 13))
    windows = data.training_windows([seq, [5]], max_len=4)
    pairs = {(w[i], w[i + 1]) for w in windows for i in range(len(w) - 1)}
    assert pairs == {(a, a + 1) for a in range(1, 12)}
    assert max(len(w) for w in windows) == 5


def test_prefixes_pair_every_history_with_its_next_item():
    assert data.training_prefixes([[1, 2, 3, 4], [5]], max_len=2) == [[1, 2], [1, 2, 3], [2, 3, 4]]
    (inputs, targets), = data.TrainingSet([[1, 2], [1, 2, 3]], last_only=True).batches(8, random.Random(0))
    rows = {tuple(r) for r in torch.cat([inputs, targets[:, None]], 1).tolist()}
    assert rows == {(0, 1, 2), (1, 2, 3)}  # one target per prefix: the item after its newest


def test_batches_are_left_padded_and_shifted():
    windows = [[1, 2, 3], [4, 5, 6, 7, 8]]
    (inputs, targets), = data.TrainingSet(windows).batches(8, random.Random(0))
    rows = {tuple(r) for r in torch.cat([inputs, targets], 1).tolist()}
    assert rows == {(0, 0, 1, 2, 0, 0, 2, 3), (4, 5, 6, 7, 5, 6, 7, 8)}


def test_ranks_count_ties_against_the_target():
    scores = torch.tensor([[-1e9, 0.5, 0.9, 0.5, 0.1]])
    assert ranks(scores, torch.tensor([3])).item() == 2  # one higher, one tied
    metrics = summarise(torch.tensor([0, 4, 30]))
    assert metrics["HR@5"] == pytest.approx(2 / 3) and metrics["HR@20"] == pytest.approx(2 / 3)
    assert metrics["NDCG@5"] == pytest.approx((1 + 1 / torch.log2(torch.tensor(6.0)).item()) / 3)


def test_popularity_ranks_the_most_frequent_item_first():
    metrics = evaluate_popularity([[1, 2, 2], [2, 3]], num_ids=4, targets=[2, 1])
    assert metrics["HR@5"] == 1.0 and metrics["NDCG@5"] == pytest.approx((1 + 1 / torch.log2(torch.tensor(3.0)).item()) / 2)


def test_tiny_model_learnt_and_reloads_identically(tiny_checkpoint, toys_slice):
    checkpoint = Checkpoint.load(tiny_checkpoint)
    assert checkpoint.history and checkpoint.config["max_len"] == 50
    test = checkpoint.metrics["test"]
    popularity = evaluate_popularity(*_popularity_inputs(checkpoint, toys_slice))
    assert test["HR@20"] > popularity["HR@20"]
    history = torch.tensor([[0, 0, 1, 2, 3]])
    torch.testing.assert_close(Checkpoint.load(tiny_checkpoint).model(history), checkpoint.model(history))


def _popularity_inputs(checkpoint, path):
    _, sequences = data.load(path, checkpoint.index)
    split = data.leave_one_out(sequences)
    return split.test_inputs, checkpoint.index.num_ids, split.test_targets


def test_train_command_writes_a_self_describing_checkpoint(tmp_path, toys_slice):
    small = tmp_path / "small.txt"
    small.write_text("".join(toys_slice.read_text().splitlines(keepends=True)[:300]))
    assert main(["train", "--data", str(small), "--out", str(tmp_path / "run"), "--max-epochs", "2",
                 "--hidden", "16", "--threads", "1"]) == 0
    checkpoint = Checkpoint.load(tmp_path / "run" / "checkpoint.pt")
    assert len(checkpoint.history) == 2 and checkpoint.model.args.hidden == 16
    assert set(checkpoint.metrics) == {"valid", "test"}
    assert len(checkpoint.index) == len({i for line in small.read_text().splitlines() for i in line.split()[1:]})


def test_thread_counts_halve_down_to_one_unless_set():
    from trainer.train import thread_counts

    previous = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        assert thread_counts(0) == [4, 2, 1] and thread_counts(3) == [3]
    finally:
        torch.set_num_threads(previous)


def test_epochs_pick_their_thread_count_and_hand_torchs_back(tmp_path, toys_slice):
    from trainer.config import TrainConfig
    from trainer.train import fit

    small = tmp_path / "small.txt"
    small.write_text("".join(toys_slice.read_text().splitlines(keepends=True)[:300]))
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        checkpoint = fit(small, TrainConfig(max_epochs=2, hidden=16, batch_size=16), progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
    assert {h["threads"] for h in checkpoint.history} <= {1, 2}


def test_negative_threads_is_a_one_line_error(tmp_path, toys_slice, capsys):
    assert main(["train", "--data", str(toys_slice), "--out", str(tmp_path), "--threads", "-1"]) == 1
    assert "--threads must be positive" in capsys.readouterr().err


def test_eval_command_writes_report_with_baseline_and_plot(tmp_path, tiny_checkpoint, toys_slice):
    out = tmp_path / "report"
    assert main(["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(toys_slice), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "| this model |" in report and "| popularity |" in report and "items the user has seen stay in the ranking" in report
    assert f"weight_decay={Checkpoint.load(tiny_checkpoint).config['weight_decay']}" in report  # the recipe it came from
    assert "**catalogue**: none (items known by their ids only)" in report
    assert (out / "report.png").stat().st_size > 10_000


def test_missing_checkpoint_is_a_one_line_error(tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path / "none.pt")]) == 1
    assert "no such checkpoint" in capsys.readouterr().err


def test_training_that_only_hurts_hands_back_the_starting_weights(tiny_checkpoint, toys_slice):
    from trainer.config import TrainConfig
    from trainer.train import train

    checkpoint = Checkpoint.load(tiny_checkpoint)
    _, sequences = data.load(toys_slice, checkpoint.index)
    split = data.leave_one_out(sequences)
    before = {name: tensor.clone() for name, tensor in checkpoint.model.state_dict().items()}
    # A learning rate this large wrecks the model in one epoch, which does not beat the start.
    train(checkpoint, split, TrainConfig(lr=50.0, max_epochs=1, patience=1), progress=False)
    for name, tensor in checkpoint.model.state_dict().items():
        torch.testing.assert_close(tensor, before[name])
