"""The served model's contract in one place: tensor names and left padding.

Two interfaces meet here. Triton's model `next_item` (config.pbtxt) takes shop ids and answers shop
ids; inside it, the exported ONNX graph takes model ids and answers model ids. Histories are
oldest first and left-padded, so the newest item is always the last column whatever the width.

Numpy only, no project imports: each published version directory carries a copy of this file
beside model.py, which Triton's Python backend runs without the project installed.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

# Triton model next_item (must match model_repository/next_item/config.pbtxt). A request carries its
# histories in one of two forms, and asks for the answers in either or both:
REQUEST_HISTORY = "HISTORY"  # BYTES [batch, 1]: each row's shop ids, oldest first, joined by ID_SEPARATOR
REQUEST_ITEMS = "ITEMS"      # BYTES [batch, -1]: shop ids, left-padded with b"" (one element per id)
RESPONSE_RANKED = "RANKED"   # BYTES [batch, 1]: each row's top_k shop ids, best first, joined by ID_SEPARATOR
RESPONSE_ITEMS = "ITEMS"     # BYTES [batch, top_k]: shop ids, best first
RESPONSE_SCORES = "SCORES"   # FP32 [batch, top_k]
REQUEST_QUERY = "QUERY"      # BYTES [batch, 1], optional: the session's search text, b"" for none
# The joined forms cost one BYTES element per row, not one per id and padding: Triton's Python backend
# reads and writes BYTES tensors element by element in Python. No valid shop id holds the separator
# (ids are printable: streams.events.valid_id).
ID_SEPARATOR = b"\x1f"

# ONNX graph (trainer/export.py)
GRAPH_INPUT = "item_ids"                  # INT64 [batch, seq_len]: model ids, left-padded with PADDING
GRAPH_OUTPUTS = ("top_ids", "top_scores")  # INT64 / FP32 [batch, top_k], best first
PADDING = 0                               # the model id of no item
# Versions exported with a text tower (export.json "query_tokens": the width, tokenizer.json beside it)
GRAPH_QUERY = "query_ids"                 # INT64 [batch, query_tokens]: token ids, right-padded with
                                          # QUERY_PADDING; a row of padding is no query
QUERY_PADDING = 0                         # the tokenizer's [PAD]
GRAPH_HIDDEN = "hidden"                   # FP32 [batch, hidden], a third output of the same versions:
                                          # what scores items (score = hidden . item vector), so items
                                          # added after export are ranked beside the graph's own
# A version with a text tower also carries a graph of its own for rows without a query: GRAPH_INPUT
# in, GRAPH_OUTPUTS and GRAPH_HIDDEN out, the answer model.onnx gives a row of QUERY_PADDING without
# the hedge's second reading of the newest position (NextItemModel.searched_scores).
HISTORY_GRAPH = "history.onnx"
HISTORY_INT8 = "history.int8.onnx"      # its int8 twin in an export (served as HISTORY_GRAPH with --int8)
SHOP_PADDING = b""

# Items added to a version after its export (new in the catalogue, trainer/new_items.py): files in the
# version directory beside item_index.json. Scored against GRAPH_HIDDEN and merged into the top_k.
ADDED_ITEMS = "added_items.json"    # their shop ids
ADDED_VECTORS = "added_items.npy"   # FP32 [n, hidden]: their vectors (content only), row i for ADDED_ITEMS[i]


def left_pad(rows: Sequence[Sequence], width: int | None = None, fill=PADDING, dtype=np.int64) -> np.ndarray:
    """[len(rows), width] array: each row's newest `width` entries at the right end, `fill` before.

    width defaults to the longest row, not the model's max_len: positions count from the right,
    so the answer is the same and short histories (most of them) cost far less. It is at least
    1, so a batch of empty histories (new shoppers) is still a valid input.
    """
    longest = max((len(row) for row in rows), default=0)
    width = max(1, longest if width is None else min(width, longest))
    padded = np.full((len(rows), width), fill, dtype=dtype)
    for n, row in enumerate(rows):
        tail = list(row)[-width:]
        if tail:
            padded[n, width - len(tail):] = tail
    return padded


def token_rows(tokenizer, texts: Sequence[str], width: int) -> np.ndarray:
    """[len(texts), width] token ids of each text (a `tokenizers.Tokenizer`, loaded by the caller
    from tokenizer.json), cut to `width` and right-padded with QUERY_PADDING; "" is a row of padding."""
    rows = np.full((len(texts), width), QUERY_PADDING, dtype=np.int64)
    for n, encoding in enumerate(tokenizer.encode_batch([text or "" for text in texts])):
        ids = encoding.ids[:width]
        rows[n, :len(ids)] = ids
    return rows


# One more ONNX Runtime run costs about as much as this many padded positions (a run's fixed cost
# against one history position through the encoder, Toys model, one thread)
GROUP_RUN_COST = 32


def length_groups(lengths: Sequence[int], run_cost: int = GROUP_RUN_COST) -> list[np.ndarray]:
    """Row indices grouped by history length, so that each group is padded to its own longest
    (`left_pad`): the grouping that costs least in padded positions (rows x longest, summed over
    the groups) plus `run_cost` per group. Rows of one length, the common case, are one group."""
    lengths = np.maximum(np.asarray(lengths, dtype=np.int64), 1)  # an empty row is padded to 1
    widths, counts = np.unique(lengths, return_counts=True)
    if len(widths) <= 1:
        return [np.arange(len(lengths))]
    rows_below = np.concatenate([[0], np.cumsum(counts)])  # rows shorter than widths[i]
    best = np.zeros(len(widths) + 1, dtype=np.int64)  # best[j + 1]: least cost of the rows up to widths[j]
    starts = []  # starts[j]: where that cost's last group starts
    for j, width in enumerate(widths):
        costs = best[:j + 1] + (rows_below[j + 1] - rows_below[:j + 1]) * width + run_cost
        starts.append(int(np.argmin(costs)))
        best[j + 1] = costs[starts[-1]]
    groups, j = [], len(widths) - 1
    while j >= 0:
        start = starts[j]
        groups.append(np.flatnonzero((lengths >= widths[start]) & (lengths <= widths[j])))
        j = start - 1
    return groups[::-1]
