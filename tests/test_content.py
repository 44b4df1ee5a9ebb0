"""The text tower: catalogue tokens, content vectors, queries, and holding items out of training."""
import math
import random

import torch

from serving.wire import PADDING, QUERY_PADDING
from trainer import corpus, data
from trainer.content import ATTRIBUTE_TOKENS, ITEM_TOKENS, QUERY_TOKENS, TITLE_TOKENS, Vocabulary
from trainer.evaluate_search import _unrelated, simulated_query
from trainer.model import NEG_INF, QUERY_WEIGHT, ModelArgs, NextItemModel, hedged

RECORDS = [
    {"item": "1", "title": "wooden train set", "categories": ["toys", "trains"]},
    {"item": "2", "title": "lego star wars fighter", "categories": ["toys", "lego"], "brand": "lego"},
    {"item": "3", "title": "plush teddy bear", "categories": ["toys", "plush"]},
    {"item": "4", "title": "wooden puzzle box", "categories": ["toys", "puzzles"]},
]


def _vocabulary() -> Vocabulary:
    return Vocabulary.learn(RECORDS * 3)


def _model(vocabulary: Vocabulary, num_ids: int = 5) -> NextItemModel:
    torch.manual_seed(0)
    model = NextItemModel(ModelArgs(num_ids=num_ids, max_len=8, hidden=16, layers=2, heads=2, text_vocab=vocabulary.size))
    model.item_tokens.copy_(torch.from_numpy(vocabulary.item_rows([None] + RECORDS[:num_ids - 1])))
    return model.eval()


def test_tokens_of_titles_then_attributes_and_padding_for_no_record():
    vocabulary = _vocabulary()
    assert vocabulary.tokenizer.token_to_id("[PAD]") == QUERY_PADDING
    rows = vocabulary.item_rows([RECORDS[1], None, {"title": "new thing", "categories": ["unseen"]}])
    assert rows.shape == (3, ITEM_TOKENS)
    titles, attributes = rows[:, :TITLE_TOKENS], rows[:, TITLE_TOKENS:]
    assert (titles[0] > 0).sum() >= 4 and (titles[0] < vocabulary.tokenizer.get_vocab_size()).all()
    assert sorted(attributes[0][attributes[0] > 0]) == sorted(
        vocabulary.attributes[name] for name in ("category:toys", "category:lego", "brand:lego"))
    assert not rows[1].any()  # no catalogue record: no content
    assert not attributes[2].any()  # an attribute unknown at training time is left out
    assert ATTRIBUTE_TOKENS == rows.shape[1] - TITLE_TOKENS


def test_vocabulary_survives_its_dict_form():
    vocabulary = _vocabulary()
    again = Vocabulary.from_dict(vocabulary.to_dict())
    assert (again.item_rows(RECORDS) == vocabulary.item_rows(RECORDS)).all()
    assert (again.query_rows(["lego fighter"]) == vocabulary.query_rows(["lego fighter"])).all()


def test_a_query_steers_and_no_query_is_a_row_of_padding():
    vocabulary = _vocabulary()
    model = _model(vocabulary)
    items = torch.tensor([[1, 3]])
    plain = model(items)
    torch.testing.assert_close(model(items, torch.zeros(1, QUERY_TOKENS, dtype=torch.long)), plain)
    steered = model(items, torch.from_numpy(vocabulary.query_rows(["lego fighter"])))
    assert not torch.allclose(steered, plain)
    assert torch.isfinite(model(torch.zeros(1, 1, dtype=torch.long), torch.from_numpy(vocabulary.query_rows(["bear"])))).all()


def test_one_pass_reads_the_newest_position_with_and_without_the_query():
    vocabulary = _vocabulary()
    model = _model(vocabulary)
    items = torch.tensor([[0, 0, 1, 3], [2, 4, 1, 3], [0, 0, 0, 0]])
    query = torch.from_numpy(vocabulary.query_rows(["lego fighter", "", "bear"]))
    plain, queried = model.encode_searched(items, query)
    torch.testing.assert_close(plain, model.encode_newest(items), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(queried, model.encode_newest(items, query), rtol=1e-5, atol=1e-5)


def test_a_searched_answer_mixes_the_query_in_and_the_rest_keep_their_scores():
    vocabulary = _vocabulary()
    model = _model(vocabulary)
    items = torch.tensor([[0, 1, 3], [0, 1, 3], [0, 0, 0]])
    query = torch.from_numpy(vocabulary.query_rows(["lego fighter", "", "bear"]))
    scores = model(items, query)
    table = model.item_table()
    with_query = model.score(model.encode_newest(items, query), items, table)
    without = model.score(model.encode_newest(items), items, table)
    mixture = QUERY_WEIGHT * with_query.softmax(1) + (1 - QUERY_WEIGHT) * without.softmax(1)
    torch.testing.assert_close(scores[0].softmax(0), mixture[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(scores[1:], with_query[1:], rtol=1e-5, atol=1e-5)  # no query; a query alone
    # the queried score bounds the mixed one from below (an item added after export is ranked by it)
    assert (scores[0, 1:] >= with_query[0, 1:] - 1e-5).all()
    assert (scores[0, 1:] - with_query[0, 1:]).max() > 0


def test_hedging_with_no_odds_is_the_queried_row():
    queried, plain = torch.tensor([[1.0, 2.0, NEG_INF]]), torch.tensor([[3.0, -1.0, NEG_INF]])
    torch.testing.assert_close(hedged(queried, plain, torch.tensor([NEG_INF])), queried)
    even = hedged(queried, plain, torch.tensor([0.0]))
    torch.testing.assert_close(even.softmax(1), (queried.softmax(1) + plain.softmax(1)) / 2)
    assert math.isclose(even.logsumexp(1).item(), queried.logsumexp(1).item() + math.log(2), rel_tol=1e-6)


def test_the_serving_copy_folds_content_into_the_table_with_the_same_scores():
    vocabulary = _vocabulary()
    model = _model(vocabulary)
    folded = model.serving_copy()
    items, query = torch.tensor([[0, 1, 2], [3, 4, 1]]), torch.from_numpy(vocabulary.query_rows(["train", ""]))
    torch.testing.assert_close(folded(items, query), model(items, query))
    torch.testing.assert_close(folded.item_embedding.weight, model.item_table())


def test_a_grown_item_is_known_by_its_content_alone():
    vocabulary = _vocabulary()
    model = _model(vocabulary, num_ids=4)
    model.grow(5, torch.from_numpy(vocabulary.item_rows([RECORDS[3]])))
    assert not model.item_embedding.weight[4].any()
    torch.testing.assert_close(model.item_table()[4], model.text(model.item_tokens[4:5])[0])
    assert model.item_table()[4].abs().sum() > 0


def test_training_queries_come_from_the_target_titles():
    vocabulary = _vocabulary()
    model = _model(vocabulary).train()
    torch.manual_seed(1)
    targets = torch.tensor([1, 2, 3, 4] * 250)
    queries, query_only = model.training_queries(targets)
    asked = (queries != PADDING).any(1)
    assert 0.1 < asked.float().mean() < 0.2  # QUERY_SHARE + UNRELATED_SHARE of 1,000 rows
    assert ((queries != PADDING).sum(1)[asked] <= 3).all()
    titles = model.item_tokens[:, :TITLE_TOKENS]
    related = [set(queries[n][queries[n] > 0].tolist()) <= set(titles[targets[n]].tolist()) for n in range(1000)]
    assert sum(related) > 0.6 * asked.sum()  # most queries are words of their own target
    assert (query_only <= asked).all() and query_only.any()


def test_the_tower_learns_with_the_loss():
    vocabulary = _vocabulary()
    model = _model(vocabulary).train()
    inputs, targets = torch.tensor([[1, 2], [3, 4], [2, 3]]), torch.tensor([3, 1, 4])
    before = model.text.item_out.weight.detach().clone()
    model.loss(inputs, targets).backward()
    assert model.text.item_out.weight.grad.abs().sum() > 0
    assert torch.equal(before, model.text.item_out.weight)


def test_held_out_items_are_the_last_ids_and_never_trained(tmp_path):
    lines = [f"{n + 1} " + " ".join(str(1 + (n + k) % 30) for k in range(6)) for n in range(60)]
    path = tmp_path / "log.txt"
    path.write_text("\n".join(lines) + "\n")
    found = corpus.load(path, hold_out=0.2, seed=3)
    assert found.held_out == 6 and found.trained_ids == found.index.num_ids - 6
    trained = found.trained_ids
    assert all(i < trained for seq in found.split.train + found.split.valid_inputs for i in seq)
    assert all(t < trained for t in found.split.valid_targets)
    assert any(t >= trained for t in found.split.test_targets)
    _, full = data.load(path)
    assert sum(map(len, found.split.test_inputs)) == sum(len(seq) - 1 for seq in full if len(seq) >= 3)


def test_simulated_queries_are_consecutive_title_words():
    rng = random.Random(0)
    for _ in range(50):
        query = simulated_query("small wooden toy train with tracks", rng)
        assert 2 <= len(query.split()) <= 3 and query in "small wooden toy train with tracks"
    assert simulated_query("robot", rng) is None
    unrelated = _unrelated(["a b", "c d", "e f"], [1, 2, 3], rng)
    assert all(u != q for u, q in zip(unrelated, ["a b", "c d", "e f"]))

