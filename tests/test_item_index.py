import json

import pytest

from trainer.item_index import PADDING, ItemIndex


def test_ids_start_at_one_and_ints_are_strings():
    index = ItemIndex(["a", 7, "b"])
    assert index.to_model(["a", "7", 7, "b"]) == [1, 2, 2, 3]
    assert index.to_shop([1, 2, 3]) == ["a", "7", "b"]
    assert len(index) == 3 and index.num_ids == 4


def test_grow_appends_and_never_renumbers():
    index = ItemIndex(["a", "b"])
    before = index.to_model(["a", "b"])
    assert index.grow(["b", "c", "c", "d"]) == 2
    assert index.to_model(["a", "b"]) == before
    assert index.to_model(["c", "d"]) == [3, 4]
    assert index.grow(["a"]) == 0


def test_unknown_and_padding():
    index = ItemIndex(["a"])
    assert index.to_model(["nope", "a"]) == [PADDING, 1]
    assert index.to_model(["nope"], unknown=-1) == [-1]
    assert index.to_shop([0, 1, 99]) == [None, "a", None]


def test_save_load_round_trip_as_json_list(tmp_path):
    index = ItemIndex(["x", 3, "y"])
    path = tmp_path / "item_index.json"
    index.save(path)
    assert json.loads(path.read_text()) == ["x", "3", "y"]  # position i holds model id i + 1
    loaded = ItemIndex.load(path)
    assert loaded.to_model(["x", "3", "y"]) == [1, 2, 3]


def test_duplicate_ids_in_a_saved_list_are_rejected():
    with pytest.raises(ValueError):
        ItemIndex.from_list(["a", "a"])
