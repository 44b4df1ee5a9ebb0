"""Pure parts of incremental fine-tuning: sequences, index growth, the gate, --every."""
import pytest
import torch

from streams.events import Event
from trainer.checkpoint import Checkpoint
from trainer.content import Vocabulary
from trainer.finetune import Histories, build_split, decide, evaluate_live, fine_tune, grow_index, user_sequences
from trainer.finetune_config import Every, FinetuneConfig, parse_every
from trainer.item_index import ItemIndex
from trainer.model import ModelArgs, NextItemModel


def click(user, item, ts):
    return Event("click", user, "s", ts, items=(item,))


def test_user_sequences_follow_event_time_across_topics_and_skip_searches():
    events = [click("u", "b", 20.0), Event("search", "u", "s", 15.0, query="lego"), click(7, 3, 5.0),
              click("u", "a", 10.0), Event("purchase", "u", "s", 30.0, items=("c", 4))]
    assert user_sequences(events) == {"u": ["a", "b", "c", "4"], "7": ["3"]}


def test_index_growth_keeps_old_ids_and_appends_new_items_in_order():
    live = ItemIndex(["x", "y"])
    grown = grow_index(live, {"u": ["y", "new1"], "v": ["new2", "x", "new1"]})
    assert grown.to_model(["x", "y", "new1", "new2"]) == [1, 2, 3, 4]
    assert len(live) == 2  # the live model's index is not touched


def test_grown_embedding_table_keeps_old_rows():
    model = NextItemModel(ModelArgs(num_ids=3, max_len=4, hidden=8, layers=1, heads=1))
    old = model.item_embedding.weight.detach().clone()
    model.grow(6)
    assert torch.equal(model.item_embedding.weight[:3], old)
    assert model.item_embedding.weight.shape == (6, 8)


def test_split_holds_out_the_newest_users_whole_with_history_as_context():
    index = ItemIndex(["a", "b", "c", "d"])
    histories = Histories({"u": ["a", "b"]})
    split = build_split(index, histories, {"u": ["c", "d"], "v": ["a", "b"], "w": ["a", "d"]}, max_len=50,
                        holdout=1 / 3)
    assert split.test_inputs == [[1]] and split.test_targets == [4]  # w, the newest user, is never trained on
    assert split.valid_inputs == [[1, 2, 3]] and split.valid_targets == [4]
    assert split.train == [[1, 2, 3], [1, 2]]  # u without its last item; v, too short to validate, whole


def test_histories_keep_newest_items_and_drop_oldest_users():
    histories = Histories(max_len=3, max_users=2)
    histories.update({"a": ["1", "2"], "b": ["3"]})
    histories.update({"a": ["4", "5"], "c": ["6"]})
    assert list(histories.items) == ["a", "c"]
    assert histories.get("a") == ["2", "4", "5"]


@pytest.mark.parametrize("candidate, live, gain, publish", [
    (0.10, 0.10, 0.0, True), (0.11, 0.10, 0.0, True), (0.09, 0.10, 0.0, False), (0.105, 0.10, 0.01, False)])
def test_gate_publishes_only_a_candidate_not_worse_than_live(candidate, live, gain, publish):
    assert decide({"NDCG@20": candidate}, {"NDCG@20": live}, gain) is publish


@pytest.mark.parametrize("text, every", [
    (None, Every()), ("500", Every(events=500)), ("30s", Every(seconds=30.0)), ("10m", Every(seconds=600.0)),
    ("1.5h", Every(seconds=5400.0))])
def test_every_parses_events_or_durations(text, every):
    assert parse_every(text) == every


@pytest.mark.parametrize("text", ["", "0", "-5", "10x", "2.5", "m"])
def test_every_rejects_nonsense(text):
    with pytest.raises(ValueError):
        parse_every(text)


def test_live_model_ranks_items_it_does_not_know_last():
    torch.manual_seed(0)
    live = Checkpoint(NextItemModel(ModelArgs(num_ids=4, max_len=4, hidden=8, layers=1, heads=1)), ItemIndex("abc"))
    known = evaluate_live(live, [[1, 2]], [3], num_ids=6)
    unknown = evaluate_live(live, [[1, 2, 5]], [4], num_ids=6)  # the new item in the input drops out
    assert known["HR@5"] == 1.0 and unknown["HR@5"] == 0.0


def test_fine_tune_learns_new_items_and_passes_the_gate():
    torch.manual_seed(0)
    live = Checkpoint(NextItemModel(ModelArgs(num_ids=4, max_len=8, hidden=16, layers=1, heads=1, dropout=0.0)),
                      ItemIndex("abc"))
    new = {f"u{n}": ["a", f"n{n % 3}", f"m{n % 3}", f"n{n % 3}", f"m{n % 3}"] for n in range(60)}  # fixed pairs
    result = fine_tune(live, Histories(), new, FinetuneConfig(lr=1e-2, max_epochs=30, patience=30, min_users=10),
                       progress=False)
    assert result.outcome == "published" and result.new_items == 6 and result.held_out == 12
    assert result.live_metrics["HR@5"] == 0.0 and result.candidate_metrics["HR@5"] == 1.0
    assert result.candidate.model.num_ids == 10 and live.model.num_ids == 4


def test_fine_tune_grows_a_text_model_by_the_catalogue_content_of_its_new_items():
    torch.manual_seed(0)
    catalogue = {item: {"title": title, "categories": [category]} for item, title, category in [
        ("a", "red car", "cars"), ("b", "blue car", "cars"), ("c", "rag doll", "dolls"),
        ("n0", "red racing car", "cars"), ("fresh", "wooden doll house", "dolls")]}
    vocabulary = Vocabulary.learn(catalogue[item] for item in "abc")
    model = NextItemModel(ModelArgs(num_ids=4, max_len=8, hidden=16, layers=1, heads=1, text_vocab=vocabulary.size))
    model.item_tokens.copy_(torch.from_numpy(vocabulary.item_rows([None] + [catalogue[item] for item in "abc"])))
    live = Checkpoint(model, ItemIndex("abc"), vocabulary=vocabulary)
    new = {f"u{n}": ["a", "n0", "b", "n0"] for n in range(20)}
    result = fine_tune(live, Histories(), new, FinetuneConfig(max_epochs=1, min_users=2), progress=False,
                       catalogue=catalogue)
    candidate = result.candidate  # "fresh": listed, in no event yet
    assert candidate.index.to_list() == ["a", "b", "c", "n0", "fresh"] and candidate.vocabulary is vocabulary
    expected = torch.from_numpy(vocabulary.item_rows([catalogue["n0"], catalogue["fresh"]]))
    assert torch.equal(candidate.model.item_tokens[4:], expected) and expected.count_nonzero() > 0


def test_fine_tune_skips_when_too_few_users_can_be_judged():
    live = Checkpoint(NextItemModel(ModelArgs(num_ids=4, max_len=8, hidden=8, layers=1, heads=1)), ItemIndex("abc"))
    result = fine_tune(live, Histories(), {"u": ["a", "b", "c"]}, FinetuneConfig(min_users=2), progress=False)
    assert result.outcome == "skipped" and result.candidate is None


def test_rehearsal_trains_on_other_users_histories_but_never_evaluates_them():
    index = ItemIndex(["a", "b", "c", "d"])
    histories = Histories({"old1": ["a", "b"], "old2": ["c", "d"], "u": ["a"]})
    split = build_split(index, histories, {"u": ["b", "c"]}, max_len=50, rehearsal=2.0, holdout=1.0)
    assert split.test_targets == [3] and split.test_inputs == [[1, 2]]
    assert [1, 2] in split.train and [3, 4] in split.train
