"""Triton Python-backend model `next_item`: the next items for each user, in the shop's id space.

Each version directory is self-contained: this file and wire.py (the tensor names and padding,
serving/wire.py, both copied at publish time), model.onnx, item_index.json (position i is model
id i+1; 0 is padding) and export.json (top_k, max_len). A version exported with a text tower also
has tokenizer.json and export.json's query_tokens: the optional QUERY input is tokenised and fed
to the graph beside the items; other versions ignore QUERY. Such a version's rows without a query go
to its history graph (wire.HISTORY_GRAPH, when the version has one), which answers them as model.onnx
would without the hedge's cost. Such a version may also carry items
added after its export (wire.ADDED_ITEMS and wire.ADDED_VECTORS, trainer/new_items.py): each row's
answer is then the best top_k of the graph's and of theirs, scored by the graph's hidden output.
The whole dynamic batch goes through one ONNX Runtime `session.run` per graph; a request that cannot be
read gets an error response of its own, and the model never raises out of `execute`.
"""
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))  # one stub process per version: its own wire.py
import wire  # noqa: E402

WARMUP_BATCHES = (1, 64)
WARMUP_QUERY = "warm up"  # a tower version runs its tokenizer and query path before it reports ready


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]

        meta = _read_json(version_dir / "export.json", "max_len")
        self.max_len = int(meta["max_len"])
        index = _read_json(version_dir / "item_index.json")
        self.model_ids = {str(item).encode(): n for n, item in enumerate(index, start=1)}
        self.shop_ids = np.array([b""] + [str(item).encode() for item in index], dtype=np.object_)

        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        options = _session_options(config)
        self.session = ort.InferenceSession(str(version_dir / "model.onnx"), options, providers=providers)
        self.query_tokens, self.tokenizer = _query_reader(version_dir, meta, self.session)
        self.history_session = _history_graph(version_dir, self.tokenizer, options, providers)
        added, self.added_vectors = _added_items(version_dir, self.session, self.history_session)
        self.shop_ids = np.concatenate([self.shop_ids, np.array(added, dtype=np.object_)])
        self._warm_up()
        pb_utils.Logger.log_info(
            f"next_item version {args['model_version']}: {len(index)} items and {len(added)} added, max_len {self.max_len}, "
            f"query tokens {self.query_tokens or 'none'}, providers {self.session.get_providers()}")

    def _warm_up(self):
        # The first runs of an ORT session allocate and pick kernels; pay that before reporting ready.
        for batch in WARMUP_BATCHES:
            for width in (1, self.max_len):
                for query in (WARMUP_QUERY, ""):
                    self._run(np.zeros((batch, width), dtype=np.int64), [query] * batch)

    def _run_grouped(self, rows, queries):
        """`_run` over rows of model ids, in groups of similar length (wire.length_groups), each
        padded to its own longest: a history of 3 items beside one of 50 is not computed at 50."""
        groups = wire.length_groups([len(row) for row in rows])
        if len(groups) == 1:
            return self._run(wire.left_pad(rows), queries)
        answered = [self._run(wire.left_pad([rows[n] for n in group]), [queries[n] for n in group] if queries else queries)
                    for group in groups]
        items, scores = (np.empty((len(rows), *part.shape[1:]), dtype=part.dtype) for part in answered[0])
        for group, (group_items, group_scores) in zip(groups, answered):
            items[group], scores[group] = group_items, group_scores
        return items, scores

    def _run(self, model_ids, queries):
        """Shop ids and scores [rows, top_k] of left-padded model ids and each row's query."""
        if self.tokenizer is None:
            return self._scored(self.session, {wire.GRAPH_INPUT: model_ids})
        tokens = wire.token_rows(self.tokenizer, queries, self.query_tokens)
        asked = (tokens != wire.QUERY_PADDING).any(axis=1)
        if self.history_session is None or asked.all():
            return self._scored(self.session, {wire.GRAPH_INPUT: model_ids, wire.GRAPH_QUERY: tokens})
        if not asked.any():
            return self._scored(self.history_session, {wire.GRAPH_INPUT: model_ids})
        searched = self._scored(self.session, {wire.GRAPH_INPUT: _trimmed(model_ids[asked]), wire.GRAPH_QUERY: tokens[asked]})
        plain = self._scored(self.history_session, {wire.GRAPH_INPUT: _trimmed(model_ids[~asked])})
        items, scores = (np.empty((len(model_ids), *part.shape[1:]), dtype=part.dtype) for part in searched)
        items[asked], scores[asked] = searched
        items[~asked], scores[~asked] = plain
        return items, scores

    def _scored(self, session, feed):
        if self.added_vectors is None:
            top_ids, top_scores = session.run(list(wire.GRAPH_OUTPUTS), feed)
        else:
            top_ids, top_scores, hidden = session.run([*wire.GRAPH_OUTPUTS, wire.GRAPH_HIDDEN], feed)
            top_ids, top_scores = _merged(top_ids, top_scores, hidden @ self.added_vectors.T, len(self.model_ids) + 1)
        return self.shop_ids[top_ids], top_scores.astype(np.float32)

    def _histories(self, request):
        """The request's rows of shop ids (HISTORY, else ITEMS) -> each row's newest max_len known model
        ids (unknown ids and padding drop out)."""
        joined = pb_utils.get_input_tensor_by_name(request, wire.REQUEST_HISTORY)
        if joined is not None:
            # Triton has checked the shape against config.pbtxt ([batch, 1])
            rows = (row.split(wire.ID_SEPARATOR) for row in joined.as_numpy()[:, 0])
        else:
            items = pb_utils.get_input_tensor_by_name(request, wire.REQUEST_ITEMS)
            if items is None:
                raise ValueError(f"a request needs {wire.REQUEST_HISTORY} or {wire.REQUEST_ITEMS}")
            rows = items.as_numpy()
        known = self.model_ids
        return [[known[item] for item in row if item in known][-self.max_len:] for row in rows]

    def execute(self, requests):
        responses = [None] * len(requests)
        sessions, queries, owners = [], [], []
        for n, request in enumerate(requests):
            try:
                rows = self._histories(request)
                request_queries = _queries(request, len(rows)) if self.tokenizer is not None else ()
                sessions.append(rows)
                queries.extend(request_queries)
                owners.append(n)
            except Exception as exc:  # a bad request must not fail its neighbours in the batch
                responses[n] = _error(exc)
        if sessions:
            self._answer(requests, sessions, queries, owners, responses)
        return responses

    def _answer(self, requests, sessions, queries, owners, responses):
        try:
            items, scores = self._run_grouped([row for rows in sessions for row in rows], queries)
        except Exception as exc:
            for n in owners:
                responses[n] = _error(exc)
            return
        start = 0
        for n, rows in zip(owners, sessions):
            end = start + len(rows)
            answer = _outputs(requests[n], items[start:end], scores[start:end])
            responses[n] = pb_utils.InferenceResponse(output_tensors=answer)
            start = end


def _outputs(request, items, scores):
    """The answer's tensors that `request` asks for (all of them when it names none)."""
    wanted = set(request.requested_output_names())
    outputs = [pb_utils.Tensor(wire.RESPONSE_SCORES, scores)]
    if wire.RESPONSE_RANKED in wanted:
        ranked = np.array([wire.ID_SEPARATOR.join(row) for row in items], dtype=np.object_).reshape(len(items), 1)
        outputs.append(pb_utils.Tensor(wire.RESPONSE_RANKED, ranked))
    if wire.RESPONSE_ITEMS in wanted:
        outputs.append(pb_utils.Tensor(wire.RESPONSE_ITEMS, items))
    return outputs


def _queries(request, rows):
    """The request's search text per row; "" for every row when the optional QUERY input is absent."""
    tensor = pb_utils.get_input_tensor_by_name(request, wire.REQUEST_QUERY)
    if tensor is None:
        return [""] * rows
    # Triton has checked the shape against config.pbtxt ([batch, 1], the batch of ITEMS)
    return [text.decode("utf-8", "replace") for text in tensor.as_numpy()[:, 0]]


def _query_reader(version_dir, meta, session):
    """(query_tokens, tokenizer) of a version exported with a text tower, else (None, None). The
    graph must take the query input exactly when export.json says it does."""
    takes_query = wire.GRAPH_QUERY in {graph_input.name for graph_input in session.get_inputs()}
    if "query_tokens" not in meta:
        if takes_query:
            raise pb_utils.TritonModelException(
                f"{version_dir}/model.onnx takes {wire.GRAPH_QUERY} but export.json has no query_tokens; export the model again")
        return None, None
    if not takes_query:
        raise pb_utils.TritonModelException(
            f"{version_dir}/export.json has query_tokens but model.onnx takes no {wire.GRAPH_QUERY}; export the model again")
    from tokenizers import Tokenizer  # only versions with a text tower need it

    try:
        return int(meta["query_tokens"]), Tokenizer.from_file(str(version_dir / "tokenizer.json"))
    except Exception as exc:
        raise pb_utils.TritonModelException(f"{version_dir}/tokenizer.json: {type(exc).__name__}: {exc}") from None


def _history_graph(version_dir, tokenizer, options, providers):
    """The session of a tower version's graph for rows without a query; None for a version without
    one (every row then goes to model.onnx, as versions exported before it did)."""
    path = version_dir / wire.HISTORY_GRAPH
    if tokenizer is None or not path.exists():
        return None
    session = ort.InferenceSession(str(path), options, providers=providers)
    if [graph_input.name for graph_input in session.get_inputs()] != [wire.GRAPH_INPUT]:
        raise pb_utils.TritonModelException(f"{path} must take {wire.GRAPH_INPUT} alone; export the model again")
    return session


def _added_items(version_dir, *sessions):
    """(shop ids, vectors [n, hidden]) of the items added to the version after export; ([], None)
    when it has none. They are scored by the graphs' hidden output, so every graph must answer it."""
    if not (version_dir / wire.ADDED_ITEMS).exists():
        return [], None
    if any(wire.GRAPH_HIDDEN not in {output.name for output in session.get_outputs()} for session in sessions if session):
        raise pb_utils.TritonModelException(
            f"{version_dir} has {wire.ADDED_ITEMS} but its graphs do not all answer {wire.GRAPH_HIDDEN}; export the model again")
    items = [str(item).encode() for item in _read_json(version_dir / wire.ADDED_ITEMS)]
    try:
        vectors = np.load(version_dir / wire.ADDED_VECTORS).astype(np.float32)
    except (OSError, ValueError) as exc:
        raise pb_utils.TritonModelException(f"{version_dir / wire.ADDED_VECTORS}: {type(exc).__name__}: {exc}") from None
    if vectors.ndim != 2 or len(vectors) != len(items):
        raise pb_utils.TritonModelException(
            f"{version_dir / wire.ADDED_VECTORS}: shape {list(vectors.shape)}, expected [{len(items)}, hidden]")
    return items, vectors


def _trimmed(model_ids):
    """Left-padded rows without the columns that are padding in every row (positions count from the
    right, so the answers stay the same); at least one column."""
    used = np.flatnonzero((model_ids != wire.PADDING).any(axis=0))
    return model_ids[:, used[0] if len(used) else -1:]


def _merged(top_ids, top_scores, added_scores, first_id):
    """The best k of each row's graph answer (top_ids, top_scores [rows, k]) and of the added items'
    scores [rows, n] (their ids count from first_id), best first."""
    rows, k = top_ids.shape
    n = added_scores.shape[1]
    best = np.argpartition(-added_scores, k - 1, axis=1)[:, :k] if n > k else np.broadcast_to(np.arange(n), (rows, n))
    ids = np.concatenate([top_ids, first_id + best], axis=1)
    scores = np.concatenate([top_scores, np.take_along_axis(added_scores, best, axis=1)], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)


def _read_json(path, *keys):
    """A version's metadata file; missing or unreadable, one line naming it fails the load (the
    publish retires the version and the old one keeps serving)."""
    try:
        value = json.loads(path.read_text())
        missing = [key for key in keys if key not in value]
    except (OSError, ValueError, TypeError) as exc:
        raise pb_utils.TritonModelException(f"{path}: {type(exc).__name__}: {exc}") from None
    if missing:
        raise pb_utils.TritonModelException(f"{path}: no {', '.join(missing)}; export the model again")
    return value


def _session_options(config):
    """Threads from the config's `intra_op_threads` parameter (0: one per core). Spinning is off:
    between batches ORT's idle threads would otherwise busy-wait on cores that Kafka and the
    stream workers beside Triton need."""
    parameters = config.get("parameters", {})
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(parameters.get("intra_op_threads", {}).get("string_value", "0"))
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _error(exc):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}"))
