"""The short form of `shopguide chaos`: scenarios a, c, f and g on fewer events, on the session's
broker and Triton. Each must lose no accepted event, leave every session equal to the fold of its
user's events (each once) and dead-letter every rejected payload."""
import pytest

from console.chaos import SCENARIOS, notes, run_scenario, summary
from console.chaos_stack import Stack
from serving.triton import LocalTriton

pytestmark = [pytest.mark.kafka, pytest.mark.triton]
EVENTS = {"a": 3000, "c": 3000, "f": 1500, "g": 3000}
USERS = 300
RATE = 300.0


@pytest.fixture
def stack(kafka_broker, triton, tmp_path):
    return Stack(kafka_broker, LocalTriton(triton.settings), tmp_path)


@pytest.mark.parametrize("letter", sorted(EVENTS))
def test_scenario_loses_nothing(stack, letter):
    row = run_scenario(stack, SCENARIOS[letter], EVENTS[letter], USERS, RATE, catch_up_s=180)
    report = summary(row) + "".join(f"\n  {note}" for note in notes(row))
    assert row.error is None, report
    assert row.caught_up, report
    assert row.audit.accepted > 0 and row.audit.rejected > 0
    assert (row.audit.lost, row.audit.mismatches, row.audit.missing_dead_letters) == (0, 0, 0), report
    assert row.failed_sends == 0
