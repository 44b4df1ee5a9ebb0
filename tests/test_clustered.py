"""Cluster-pruned scoring for large catalogues (trainer/clustered.py)."""
import numpy as np
import torch

from serving.wire import PADDING
from trainer.content import QUERY_TOKENS
from trainer.clustered import ClusteredTopK, cluster, default_clusters
from trainer.export import TopK, serving_head
from trainer.model import ModelArgs, NextItemModel


def _model(num_ids=400) -> NextItemModel:
    torch.manual_seed(0)
    return _seen_first(NextItemModel(ModelArgs(num_ids=num_ids, max_len=8, hidden=16, layers=2, heads=2)).eval())


def _tower_model() -> NextItemModel:
    """A small model with a text tower, folded for serving as an export folds it."""
    torch.manual_seed(0)
    model = NextItemModel(ModelArgs(num_ids=400, max_len=8, hidden=16, layers=2, heads=2, text_vocab=40))
    model.item_tokens.random_(1, 40)
    return _seen_first(model.eval().serving_copy())


def _seen_first(model: NextItemModel) -> NextItemModel:
    """A seen-item bias that lifts the history's items above the rest: both heads must apply it."""
    with torch.no_grad():
        model.seen_bias.fill_(1.0)
    return model


def test_every_item_sits_in_exactly_one_bounded_cluster():
    clustering = cluster(_model().item_embedding.weight, clusters=12)
    members = clustering.members
    assert members.shape[0] == 12 and members.shape[1] == int(np.ceil(1.5 * 399 / 12))
    ids = members[members != PADDING]
    assert sorted(ids.tolist()) == list(range(1, 400))


def test_probing_every_cluster_gives_the_exact_answer():
    model = _model()
    ids = torch.tensor([[0, 0, 3, 4], [5, 6, 7, 8], [0, 0, 0, 0]])
    exact_ids, exact_scores = TopK(model, 10)(ids)
    pruned_ids, pruned_scores = ClusteredTopK(model, 10, cluster(model.item_embedding.weight, 12), probe=12)(ids)
    torch.testing.assert_close(pruned_scores, exact_scores)
    assert (pruned_ids == exact_ids).all()
    assert set(exact_ids[1, :4].tolist()) == {5, 6, 7, 8}  # the seen-item bias at work


def test_probing_every_cluster_gives_the_exact_answer_to_a_search_too():
    model = _tower_model()
    ids = torch.tensor([[0, 0, 3, 4], [5, 6, 7, 8], [0, 0, 0, 0]])
    query = torch.zeros(3, QUERY_TOKENS, dtype=torch.long)
    query[0, :2], query[2, :3] = torch.tensor([5, 9]), torch.tensor([7, 8, 9])  # searched, none, a query alone
    exact_ids, exact_scores, exact_hidden = TopK(model, 10)(ids, query)
    clustered = ClusteredTopK(model, 10, cluster(model.item_embedding.weight, 12), probe=12)
    pruned_ids, pruned_scores, pruned_hidden = clustered(ids, query)
    torch.testing.assert_close(pruned_scores, exact_scores)
    assert (pruned_ids == exact_ids).all()
    torch.testing.assert_close(pruned_hidden, exact_hidden)


def test_a_history_alone_answers_as_an_empty_query_does_in_both_heads():
    """What a tower version's history graph (no query input) answers: the searched graph's answer
    to a row without a query, its hidden state included."""
    model = _tower_model()
    ids = torch.tensor([[0, 0, 3, 4], [5, 6, 7, 8], [0, 0, 0, 0]])
    no_query = torch.zeros(3, QUERY_TOKENS, dtype=torch.long)
    for head in (TopK(model, 10), ClusteredTopK(model, 10, cluster(model.item_embedding.weight, 12), probe=3)):
        for alone, searched in zip(head(ids), head(ids, no_query)):
            torch.testing.assert_close(alone, searched)


def test_pruned_answers_are_real_items_best_first():
    model = _model()
    found, scores = ClusteredTopK(model, 10, cluster(model.item_embedding.weight, 12), probe=2)(torch.tensor([[1, 2, 3]]))
    assert found.shape == (1, 10) and (found > PADDING).all() and len(set(found[0].tolist())) == 10
    assert (scores[0, :-1] >= scores[0, 1:]).all()


def test_exact_scoring_is_the_default_below_two_hundred_thousand_items():
    assert default_clusters(199_999) == 0 and default_clusters(1_000_000) == 4000
    head, scoring = serving_head(_model(), 10)
    assert isinstance(head, TopK) and scoring == {"exact": True}


def test_the_exported_graph_answers_as_torch_does(tmp_path):
    import onnxruntime as ort

    from serving.wire import GRAPH_INPUT, GRAPH_OUTPUTS
    from trainer.export import write_graph

    model = _model()
    head, scoring = serving_head(model, 10, clusters=12, probe=3)
    assert scoring["clusters"] == 12 and scoring["probe"] == 3 and not scoring["exact"]
    write_graph(head, tmp_path / "model.onnx", tmp_path)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = torch.tensor([[0, 0, 3, 4], [5, 6, 7, 8], [0, 0, 0, 9]])
    found, scores = session.run(list(GRAPH_OUTPUTS), {GRAPH_INPUT: ids.numpy()})
    expected_ids, expected_scores = head(ids)
    assert (found == expected_ids.numpy()).all()
    np.testing.assert_allclose(scores, expected_scores.detach().numpy(), rtol=1e-4, atol=1e-5)
