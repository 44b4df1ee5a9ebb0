"""The fine-tune job's state without servers: histories from sessions and a window of events, the
run log as the position, the worker's checks on records (fast)."""
import json
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from serving.repository import ModelRepository
from shopguide.config import Settings
from shopguide.metrics import WorkerMetrics
from streams.agents import NullSink, SessionAgent
from streams.delivery import Outbox
from streams.events import Event, RejectedEvent, decode, encode, user_key
from streams.session_store import SessionStore
from streams.sessions import apply
from streams.stall_guard import StallGuard
from tests.fixtures.events import junk_payloads, valid_events
from trainer.eventlog import Read, Window, accept
from trainer.finetune import build_split, user_sequences
from trainer.histories import Snapshot, before, fold_frontier, histories
from trainer.item_index import ItemIndex
from trainer.runs import RECORD, RunLog, RunRecord, unrecorded

CLICKS, BUYS = "shop.clicks:0", "shop.purchases:0"


def click(user, item, ts=1.7e9):
    return Event("click", user, "s", ts, items=(item,))


def fold(reads, session=None):
    """The session the worker makes of these reads (in this order)."""
    for read in reads:
        session = apply(session, read.event, 50, read.at, read.offset)
    return session


def test_history_is_the_session_less_the_windows_items_it_holds():
    old = [Read(CLICKS, 0, click("u", "a")), Read(BUYS, 0, click("u", "b"))]
    new = [Read(CLICKS, 1, click("u", "c")), Read(BUYS, 1, Event("purchase", "u", "s", 1.7e9, items=("b", "d")))]
    # The worker folded the topics interleaved: the window's "c" came before the old "b".
    session = fold([old[0], new[0], old[1], new[1]])
    assert list(session.items) == ["a", "c", "b", "b", "d"]
    assert before(session, new, {CLICKS: 2, BUYS: 2}) == ["a", "b"]
    assert before(session, new[:1], {CLICKS: 2, BUYS: 2}) == ["a", "b", "b", "d"]  # d's event not held: kept
    unfolded = [*new, Read(CLICKS, 2, click("u", "e"))]  # read, not folded yet: nothing to take out
    assert before(session, unfolded, {CLICKS: 3, BUYS: 2}) == ["a", "b"]


def test_a_session_past_a_cut_window_gives_no_context_and_no_rehearsal():
    reads = [Read(CLICKS, n, click(user, f"i{n}")) for n, user in enumerate(["u", "old", "u"])]
    sessions = {user_key(user): fold([r for r in reads if r.event.user == user]) for user in ("u", "old")}
    window = Window({CLICKS: 0}, {CLICKS: 1}, reads[:1], full=True)  # --max-events stopped after offset 0
    assert before(sessions[b"u"], reads[:1], window.ends) is None
    made = histories(Snapshot(sessions), window, max_len=50)
    assert made.items == {}  # u holds offset 2, past the window; old holds offset 1
    whole = Window({CLICKS: 0}, {CLICKS: 3}, [reads[0], reads[2]])
    assert histories(Snapshot(sessions), whole, max_len=50).items == {"old": ["i1"]}


def test_a_held_out_users_target_is_never_in_its_own_input():
    reads = [Read(CLICKS, n, click("u", item)) for n, item in enumerate("abcd")]
    snapshot = Snapshot({b"u": fold(reads)})
    window = Window({CLICKS: 2}, {CLICKS: 4}, reads[2:])  # a, b came in an earlier run
    new = user_sequences(read.event for read in window.events)
    context = histories(snapshot, window, max_len=50)
    split = build_split(ItemIndex(list("abcd")), context, new, max_len=50, holdout=1.0)
    assert context.items == {"u": ["a", "b"]}
    assert split.test_inputs == [[1, 2, 3]] and split.test_targets == [4]


def test_the_frontier_is_what_sessions_hold_or_workers_committed_never_behind_the_start():
    snapshot = Snapshot({b"u": fold([Read(CLICKS, 6, click("u", "a")), Read(BUYS, 2, click("u", "b"))])})
    assert snapshot.frontier() == {CLICKS: 7, BUYS: 3}
    starts = {CLICKS: 4, BUYS: 5, "shop.searches:0": 0}
    assert fold_frontier(starts, {"shop.searches:0": 9, CLICKS: 5}, snapshot) == {CLICKS: 7, BUYS: 5,
                                                                                  "shop.searches:0": 9}


def worker():
    store = SessionStore("127.0.0.1:1", "changelog")
    store.partitions[0] = {}
    return SessionAgent(Settings(), store, WorkerMetrics(CollectorRegistry()), NullSink(), Outbox(None), StallGuard(30, 3))


def worker_verdict(agent, key, payload) -> str:
    message = SimpleNamespace(key=key, value=payload, topic="shop.clicks", partition=0, offset=0, timestamp=0.0)
    try:
        agent.fold(message, {})
        return "accepted"
    except RejectedEvent as rejected:
        return rejected.reason


def job_verdict(key, payload) -> str:
    try:
        accept(key, payload)
        return "accepted"
    except RejectedEvent as rejected:
        return rejected.reason


@settings(max_examples=200, deadline=None)
@given(item=st.one_of(valid_events().map(encode), junk_payloads), key=st.one_of(st.none(), st.binary(max_size=8)),
       own_key=st.booleans())
def test_the_job_accepts_exactly_what_the_worker_folds(item, key, own_key):
    key = owned_key(item, key) if own_key else key
    assert job_verdict(key, item) == worker_verdict(worker(), key, item)


def owned_key(payload, key):
    """The payload's own user key when it decodes (as the storefront keys events), else `key`."""
    try:
        return user_key(decode(payload).user)
    except RejectedEvent:
        return key


def record(run, outcome="published", committed=True, window=None):
    return RunRecord(1.7e9, 1.0, outcome, 3, run=run, committed=committed, window=window or {})


def test_the_position_is_where_the_last_committed_run_stopped(tmp_path):
    log = RunLog(tmp_path / "runs.jsonl")
    log.append(record("a", window={CLICKS: [0, 5], BUYS: [0, 2]}))
    log.append(record("b", "skipped", committed=False, window={CLICKS: [5, 9]}))
    log.append(record("c", "rejected", window={CLICKS: [5, 8]}))
    assert log.position() == {CLICKS: 8, BUYS: 2}


def test_a_line_a_kill_cut_short_is_skipped_and_the_next_one_stands_alone(tmp_path):
    log = RunLog(tmp_path / "runs.jsonl")
    log.append(record("a", window={CLICKS: [0, 5]}))
    with log.path.open("a") as f:
        f.write('{"started": 1.7e9, "dura')
    log.append(record("b", window={CLICKS: [5, 7]}))
    assert [r.run for r in log.read()] == ["a", "b"] and log.position() == {CLICKS: 7}


def test_versions_whose_runs_the_log_misses_are_recorded(tmp_path):
    models = ModelRepository(tmp_path / "repo")
    for version, run in [(1, "known"), (2, "lost")]:
        (models.model_dir / str(version)).mkdir(parents=True)
        (models.model_dir / str(version) / RECORD).write_text(json.dumps(record(run).__dict__))
    (models.model_dir / "retired" / "3").mkdir(parents=True)
    (models.model_dir / "retired" / "3" / RECORD).write_text(json.dumps(record("killed").__dict__))
    found = {r.run: r for r in unrecorded(models, {"known"})}
    assert set(found) == {"lost", "killed"}
    assert found["lost"].version == 2 and found["lost"].outcome == "published" and found["lost"].committed
    assert found["killed"].version == 3 and found["killed"].outcome == "failed" and not found["killed"].committed
