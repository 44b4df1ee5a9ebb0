import pytest
import torch

from trainer.item_index import PADDING
from trainer.config import TrainConfig
from trainer.model import ModelArgs, NextItemModel
from trainer.train import optimisers_for


def _model(num_ids=30, **kw) -> NextItemModel:
    torch.manual_seed(0)
    return NextItemModel(ModelArgs(num_ids=num_ids, max_len=8, hidden=16, layers=2, heads=2, **kw)).eval()


def test_scores_every_id_and_padding_never_wins():
    model = _model()
    scores = model(torch.tensor([[0, 0, 3, 4], [5, 6, 7, 8]]))
    assert scores.shape == (2, 30)
    assert (scores.argmax(1) != PADDING).all()
    assert (scores[:, PADDING] < scores[:, 1:].min(1).values).all()


def test_all_padding_sequence_gives_finite_scores():
    scores = _model()(torch.zeros(3, 8, dtype=torch.long))
    assert torch.isfinite(scores).all()


def test_left_padding_does_not_change_the_answer():
    model = _model()
    short = model(torch.tensor([[3, 4, 5]]))
    padded = model(torch.tensor([[0, 0, 0, 0, 3, 4, 5]]))
    torch.testing.assert_close(short, padded, rtol=1e-5, atol=1e-5)


def test_the_answer_computes_only_the_newest_position_with_the_same_result():
    torch.manual_seed(0)
    model = NextItemModel(ModelArgs(num_ids=30, max_len=8, hidden=16, layers=3, heads=2)).eval()
    ids = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8]])
    torch.testing.assert_close(model.encode_newest(ids), model.encode(ids)[:, -1], rtol=1e-5, atol=1e-5)


def test_longer_histories_keep_the_newest_max_len_items():
    model = _model()
    history = torch.arange(1, 13)[None]  # 12 items, max_len 8
    torch.testing.assert_close(model(history), model(history[:, -8:]))


def test_loss_ignores_padding_targets_and_learns():
    model = _model(dropout=0.0).train()
    inputs, targets = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 2, 3, 4]])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.loss(inputs, targets).item()
    for _ in range(30):
        optimiser.zero_grad()
        model.loss(inputs, targets).backward()
        optimiser.step()
    assert model.loss(inputs, targets).item() < first / 2


def test_grow_adds_items_and_keeps_old_scores():
    model = _model()
    history = torch.tensor([[0, 2, 3]])
    before = model(history)
    assert model.grow(40) == 10
    after = model(history)
    assert after.shape == (1, 40) and model.args.num_ids == 40
    torch.testing.assert_close(after[:, :30], before)
    assert torch.isfinite(model(torch.tensor([[35, 39]]))).all()


def test_newest_only_targets_give_the_loss_of_the_last_position():
    model = _model(dropout=0.0).train()
    inputs = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    per_position = torch.tensor([[0, 0, 0, 9], [0, 0, 0, 11]])
    torch.testing.assert_close(model.loss(inputs, torch.tensor([9, 11])), model.loss(inputs, per_position))


def test_sampled_negatives_learn_and_cover_the_catalogue_when_asked_for_all_of_it():
    model = _model(num_ids=5000, dropout=0.0).train()
    inputs, targets = torch.tensor([[0, 1, 2, 3]] * 4), torch.tensor([4, 5, 6, 7])
    full = model.loss(inputs, targets)
    assert model.loss(inputs, targets, negatives=100_000) == full  # more draws than items: the whole catalogue
    optimisers = optimisers_for(model, TrainConfig(lr=1e-2), negatives=64)
    untouched = model.item_embedding.weight[400:].detach().clone()
    first = model.loss(inputs, targets, negatives=64)
    for _ in range(30):
        for optimiser in optimisers:
            optimiser.zero_grad()
        model.loss(inputs, targets, negatives=64).backward()
        assert model.item_embedding.weight.grad.is_sparse
        for optimiser in optimisers:
            optimiser.step()
    assert model.loss(inputs, targets) < full and torch.isfinite(first)
    changed = (model.item_embedding.weight[400:] != untouched).any(1).float().mean()
    assert 0 < changed < 0.8  # only the rows a step drew or read move


def test_items_in_the_history_are_scored_with_the_seen_bias():
    model = _model()
    history = torch.tensor([[0, 0, 3, 4, 3], [5, 6, 7, 8, 9]])
    before = model(history)
    with torch.no_grad():
        model.seen_bias.fill_(2.0)
    added = model(history) - before
    expected = torch.zeros_like(added)
    expected[0, [3, 4]] = expected[1, [5, 6, 7, 8, 9]] = 2.0
    torch.testing.assert_close(added, expected, rtol=0, atol=1e-5)  # padding stays where it was: last


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_the_seen_bias_is_the_one_that_ranks_validation_targets_best(share):
    """No repeat: the lowest bias (the history's items buried); only repeats: a lift; in between,
    the grid's best NDCG@20 as trainer/evaluate.py measures it, at every bias of the grid."""
    from trainer import seen_bias
    from trainer.evaluate import evaluate_model

    model = _model(num_ids=200)
    generator = torch.Generator().manual_seed(1)
    inputs, targets = [], []
    for n in range(300):
        history = torch.randint(1, 100, (6,), generator=generator).tolist()
        inputs.append(history)
        targets.append(history[n % 6] if n < share * 300 else 100 + n % 100)
    bias = seen_bias.fit(model, inputs, targets)
    if share == 0.0:
        assert bias == -seen_bias.BOUND
    if share == 1.0:
        assert bias > 0
    measured = []
    for value in seen_bias.GRID.tolist():
        with torch.no_grad():
            model.seen_bias.fill_(value)
        measured.append(evaluate_model(model, inputs, targets)["NDCG@20"])
    assert measured[seen_bias.GRID.tolist().index(bias)] == pytest.approx(max(measured), abs=1e-9)


def test_a_checkpoint_saved_before_the_seen_bias_scores_as_it_did(tmp_path):
    from trainer.checkpoint import Checkpoint
    from trainer.item_index import ItemIndex

    model = _model()
    path = Checkpoint(model, ItemIndex([str(n) for n in range(1, 30)])).save(tmp_path / "checkpoint.pt")
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["seen_bias"]
    torch.save(payload, path)
    loaded = Checkpoint.load(path).model
    history = torch.tensor([[0, 3, 4, 5]])
    assert loaded.seen_bias.item() == 0.0
    torch.testing.assert_close(loaded(history), model(history))


def test_a_nan_score_counts_above_the_target_and_a_nan_target_ranks_last():
    from trainer.evaluate import ranks

    scores = torch.tensor([[0.5, float("nan"), 0.2, 0.1], [float("nan")] * 4, [0.1, 0.9, 0.3, 0.2]])
    assert ranks(scores, torch.tensor([2, 1, 1])).tolist() == [2, 3, 0]
