"""`shopguide chaos`: break the local stack while events flow, then prove nothing was lost.

Each scenario runs a pipeline of its own (uuid-named topics and app id) on a private broker and
Triton, offers a steady mix of clicks, searches, add-to-carts, purchases and malformed payloads
from many users, applies its fault, waits until the workers have committed every event, and
checks what is in Kafka (streams/audit.py): every accepted event has a recommendation (repeats
after a crash are counted, not failed), every user's session is the fold of their accepted
events, each once, and every rejected payload is in the dead-letter topic with its reason.

Scenarios:
  a  SIGKILL the worker three times (each restarted)
  b  SIGKILL the broker for 20 s, then start it again on the same data
  c  SIGSTOP a worker past its session timeout while a second takes over, then SIGCONT it
  d  SIGSTOP Triton, then SIGKILL it, then start it again
  e  a second worker joins, then leaves
  f  a 1,000,500-byte payload among the events
  g  the broker rejects recommendation sends (the topic's max.message.bytes too small) for a while

Workers run under a supervisor that restarts any that exits unasked, as Kubernetes would. Every
process runs on loopback and is started (and stopped) by the command; state, logs and the small
model it serves live under --home. Exits 1 if any scenario lost an event, left a session that
does not match its events, or missed a dead letter.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from shopguide.args import path_arg
from shopguide.config import Settings
from shopguide.errors import UserError
from shopguide.extras import needs

BROKER_DOWN_S = 20.0
TRITON_PAUSED_S = 10.0
REJECTING_S = 15.0
TINY_MESSAGE_BYTES = 64  # smaller than any recommendation record
CHAOS_SESSION_TIMEOUT_S = 6.0  # scenario c: a short session timeout, so the pause outlasts it quickly


@dataclass
class Run:
    """One scenario in progress, as its fault sees it."""
    stack: object      # console.chaos_stack.Stack
    settings: Settings
    workers: object    # console.chaos_stack.Workers
    load: object       # console.chaos_load.Load


def kill_worker_three_times(run: Run) -> None:
    for n in range(1, 4):
        run.load.wait_sent(n / 4)
        run.workers.wait_consuming(0)
        run.workers.signal(0, signal.SIGKILL)


def kill_broker(run: Run) -> None:
    run.load.wait_sent(0.3)
    run.stack.kill_broker()
    time.sleep(BROKER_DOWN_S)
    run.stack.start_broker()


def pause_past_session_timeout(run: Run) -> None:
    run.load.wait_sent(0.25)
    run.workers.signal(0, signal.SIGSTOP)
    try:
        run.workers.wait_holding([1])  # the group dropped worker 0 and worker 1 took over
    finally:
        run.workers.signal(0, signal.SIGCONT)


def pause_then_kill_triton(run: Run) -> None:
    run.load.wait_sent(0.3)
    run.stack.pause_triton()
    time.sleep(TRITON_PAUSED_S)
    run.stack.kill_triton()
    run.stack.start_triton()


def worker_joins_and_leaves(run: Run) -> None:
    run.load.wait_sent(0.25)
    second = run.workers.start()
    run.workers.wait_holding([0, second])
    run.workers.wait_consuming(second)
    run.load.wait_sent(0.75)
    run.workers.leave(second)


def oversized_payload(run: Run) -> None:
    """Nothing to break: the workload carries the payload."""


def reject_recommendations(run: Run) -> None:
    run.load.wait_sent(0.3)
    with run.stack.message_limit(run.settings.topic_recommendations, TINY_MESSAGE_BYTES):
        time.sleep(REJECTING_S)


@dataclass(frozen=True)
class Scenario:
    letter: str
    title: str
    fault: Callable[[Run], None]
    workers: int = 1
    overrides: dict = field(default_factory=dict)
    oversized: bool = False


SCENARIOS = {s.letter: s for s in [
    Scenario("a", "SIGKILL the worker 3 times", kill_worker_three_times),
    Scenario("b", f"SIGKILL the broker for {BROKER_DOWN_S:g} s", kill_broker),
    Scenario("c", "SIGSTOP a worker past its session timeout", pause_past_session_timeout, workers=2,
             overrides={"session_timeout_s": CHAOS_SESSION_TIMEOUT_S, "heartbeat_s": 1.0}),
    Scenario("d", "SIGSTOP, then SIGKILL Triton", pause_then_kill_triton),
    Scenario("e", "a second worker joins and leaves", worker_joins_and_leaves),
    Scenario("f", "a 1,000,500-byte payload", oversized_payload, oversized=True),
    Scenario("g", f"recommendation sends rejected for {REJECTING_S:g} s", reject_recommendations),
]}


@dataclass
class Row:
    scenario: Scenario
    offered: int = 0
    failed_sends: int = 0
    restarts: int = 0
    caught_up: bool = False
    seconds: float = 0.0
    audit: object = None   # streams.audit.Audit
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.audit is not None and self.audit.ok


def run_scenario(stack, scenario: Scenario, events: int, users: int, rate: float,
                 catch_up_s: float = 300.0, seed: int = 0) -> Row:
    """Run one scenario on `stack` (console.chaos_stack.Stack) and audit its pipeline."""
    from console.chaos_load import Load, Workload
    from kafka.errors import KafkaError

    from console.chaos_stack import Workers
    from streams.audit import audit, wait_caught_up
    from streams.topics import ensure_topics

    settings = stack.pipeline(scenario.letter, **scenario.overrides)
    workload = Workload(events, users, settings.session_length, oversized=scenario.oversized, seed=seed)
    workload.check()
    ensure_topics(settings)
    stack.say(f"({scenario.letter}) {scenario.title}: {events:,} events from {users:,} users at {rate:g}/s, "
              f"app id {settings.worker_id}, logs in {settings.home}")
    row, started = Row(scenario), time.monotonic()
    workers = Workers(settings, settings.home, stack.say)
    load = Load(settings, workload, rate)
    try:
        workers.wait_holding([workers.start() for _ in range(scenario.workers)])
        load.start()
        scenario.fault(Run(stack, settings, workers, load))
        load.finish()
        row.caught_up = wait_caught_up(settings, catch_up_s)
    except (UserError, RuntimeError, TimeoutError) as error:  # a fault that could not be applied
        row.error = str(error)
    finally:
        load.stopping.set()
        if load.is_alive():
            load.join()
        workers.close()
    row.offered, row.failed_sends, row.restarts = load.sent, load.failed, workers.restarts
    try:
        row.audit = audit(settings)  # after an error too: what it cost so far
    except (TimeoutError, KafkaError) as error:
        row.error = f"{row.error + '; ' if row.error else ''}audit failed: {error}"
    row.seconds = time.monotonic() - started
    stack.say(f"({scenario.letter}) done in {row.seconds:.0f} s: " + (summary(row)))
    return row


def summary(row: Row) -> str:
    parts = [f"error: {row.error}"] if row.error else []
    if (a := row.audit) is not None:
        parts.append(f"{a.accepted:,} accepted, {a.lost:,} lost, {a.duplicates:,} duplicate recommendations, "
                     f"{a.mismatches:,} session mismatches, {a.dead_lettered}/{a.rejected} rejected dead-lettered")
    return "; ".join(parts)


COLUMNS = ("scenario", "events offered", "accepted", "lost", "duplicate recs", "session mismatches",
           "rejected", "dead-lettered", "worker restarts", "result")


def cells(row: Row) -> list[str]:
    a = row.audit
    counts = [a.accepted, a.lost, a.duplicates, a.mismatches, a.rejected, a.dead_lettered] if a else [None] * 6
    result = "error" if row.error else "pass" if row.ok else "FAIL"
    if not row.ok and not row.caught_up:
        result += ", not caught up"
    numbers = [row.offered, *counts, row.restarts]
    return [f"({row.scenario.letter}) {row.scenario.title}", *("-" if n is None else f"{n:,}" for n in numbers), result]


def text_table(rows: list[Row]) -> str:
    table = [list(COLUMNS), *map(cells, rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
                     for line in table)


def markdown(rows: list[Row], command: str) -> str:
    lines = ["# Chaos suite", "",
             f"`{command}` on {machine()}, {datetime.date.today().isoformat()}. "
             "A scenario passes with 0 lost events, 0 session mismatches and every rejected payload "
             "dead-lettered; duplicate recommendations are allowed after a crash (the storefront drops "
             "them by `event_offset`).", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells(row)) + " |" for row in rows]
    problems = [(row, note) for row in rows for note in notes(row)]
    if problems:
        lines += ["", "## Problems found", ""]
        lines += [f"- ({row.scenario.letter}) {note}" for row, note in problems]
    return "\n".join(lines) + "\n"


def notes(row: Row) -> list[str]:
    found = [f"error: {row.error}"] if row.error else []
    if row.error is None and not row.caught_up:
        found.append("the workers had not committed every event when the check ran")
    if row.failed_sends:
        found.append(f"{row.failed_sends} events never reached the broker")
    return found + (row.audit.examples if row.audit else [])


def machine() -> str:
    return f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), {platform.system()}"


def register(commands) -> None:
    chaos = commands.add_parser("chaos", help="break the local stack under load and check nothing was lost",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    chaos.add_argument("--scenarios", default=",".join(SCENARIOS), type=_letters,
                       help=f"comma-separated scenarios to run (default all: {','.join(SCENARIOS)})")
    chaos.add_argument("--events", type=int, default=20_000, help="events offered per scenario (default 20000)")
    chaos.add_argument("--users", type=int, default=1_000, help="users the events come from (default 1000)")
    chaos.add_argument("--rate", type=float, default=400.0, help="events per second offered (default 400)")
    chaos.add_argument("--home", dest="chaos_home", type=path_arg,
                       help="private state directory: broker data (emptied at start), Triton, model, worker "
                            "logs (default $SHOPGUIDE_HOME/chaos, i.e. var/chaos)")
    chaos.add_argument("--out", type=path_arg, default=Path("docs/chaos.md"),
                       help="where to write the table as Markdown (default docs/chaos.md)")
    chaos.add_argument("--catch-up", type=float, default=300.0,
                       help="seconds to wait after the load for the workers to commit every event (default 300)")
    chaos.add_argument("--train-minutes", type=float, default=0.5,
                       help="training budget of the small model served when --home has none and "
                            "$SHOPGUIDE_MODEL_REPOSITORY has none to copy (default 0.5; trained once, reused)")
    chaos.add_argument("--seed", type=int, default=0, help="seed of the generated events (default 0)")
    chaos.set_defaults(handler=run)
    needs(chaos, "train", "local")  # a local Triton, and a model trained when none is found


def _letters(text: str) -> list[str]:
    letters = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [letter for letter in letters if letter not in SCENARIOS]
    if unknown or not letters:
        raise argparse.ArgumentTypeError(f"unknown scenario {', '.join(unknown) or text!r}; "
                                         f"choose from {','.join(SCENARIOS)}")
    return letters


def run(args, settings: Settings) -> int:
    from console.chaos_stack import own_stack

    home = (args.chaos_home or settings.home / "chaos").resolve()
    rows = []
    with own_stack(settings, home, args.train_minutes, say=_clock()) as stack:
        for letter in args.scenarios:
            rows.append(run_scenario(stack, SCENARIOS[letter], args.events, args.users, args.rate,
                                     args.catch_up, args.seed))
    print("\n" + text_table(rows))
    for row in rows:
        for note in notes(row):
            print(f"  ({row.scenario.letter}) {note}")
    command = "shopguide chaos " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["chaos"] else "shopguide chaos"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(rows, command.strip()))
    print(f"table written to {args.out}")
    return 0 if all(row.ok for row in rows) else 1


def _clock() -> Callable[[str], None]:
    start = time.monotonic()
    return lambda message: print(f"[{time.monotonic() - start:6.1f} s] {message}", flush=True)
