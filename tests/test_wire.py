"""The served model's contract lives in serving/wire.py; config.pbtxt and the export must agree with it."""
import re

import numpy as np

from serving import wire
from serving.repository import TEMPLATE


def test_config_names_the_tensors_wire_names():
    config = (TEMPLATE / "config.pbtxt").read_text()
    inputs = re.findall(r'name: "(\w+)"\s*data_type: (\w+)\s*dims: \[ (-?\d) \]\s*([\w:\s]+?)\s*}',
                        config.split("input [", 1)[1].split("output [", 1)[0])
    outputs = re.findall(r'name: "(\w+)"\s*data_type: (\w+)\s*dims: \[ (-?\d) \]', config.split("output [", 1)[1])
    assert inputs == [(wire.REQUEST_HISTORY, "TYPE_STRING", "1", "optional: true"),
                      (wire.REQUEST_ITEMS, "TYPE_STRING", "-1", "allow_ragged_batch: true\n    optional: true"),
                      (wire.REQUEST_QUERY, "TYPE_STRING", "1", "optional: true")]
    assert outputs == [(wire.RESPONSE_RANKED, "TYPE_STRING", "1"), (wire.RESPONSE_ITEMS, "TYPE_STRING", "-1"),
                       (wire.RESPONSE_SCORES, "TYPE_FP32", "-1")]


def test_left_pad_keeps_the_newest_items_at_the_right_end():
    padded = wire.left_pad([[1, 2, 3], [], [4]], width=2)
    assert padded.dtype == np.int64
    assert padded.tolist() == [[2, 3], [0, 0], [0, 4]]


def test_left_pad_is_as_wide_as_the_longest_row_and_never_empty():
    assert wire.left_pad([[5], [6, 7]], width=50).shape == (2, 2)
    assert wire.left_pad([[], []]).shape == (2, 1)
    rows = wire.left_pad([[b"a"], []], fill=wire.SHOP_PADDING, dtype=np.object_)
    assert rows.tolist() == [[b"a"], [b""]]


def test_length_groups_pad_each_group_to_its_own_longest_when_that_saves_more_than_a_run():
    assert [list(g) for g in wire.length_groups([4, 4, 4])] == [[0, 1, 2]]
    assert [list(g) for g in wire.length_groups([])] == [[]]
    # 40 one-item histories beside 10 of 50: apart 40 + 500 positions and two runs, together 2,500
    lengths = [1] * 40 + [50] * 10
    groups = wire.length_groups(lengths, run_cost=32)
    assert [sorted(set(np.array(lengths)[g])) for g in groups] == [[1], [50]]
    # a few positions of padding are cheaper than another run
    assert len(wire.length_groups([3] * 30 + [4] * 2, run_cost=32)) == 1
    mixed = np.random.default_rng(0).integers(0, 51, 300)
    groups = wire.length_groups(mixed)
    assert sorted(np.concatenate(groups).tolist()) == list(range(300))  # every row once
    assert all(np.maximum(mixed[a], 1).max() < np.maximum(mixed[b], 1).min() for a, b in zip(groups, groups[1:]))


def test_no_valid_shop_id_holds_the_separator_of_the_joined_forms():
    from streams.events import valid_id

    assert valid_id("a b") and not valid_id("a" + wire.ID_SEPARATOR.decode() + "b")
