"""Stop a worker that stalled long enough to have lost its partitions, before it writes for them.

A worker paused past its consumer session timeout (SIGSTOP, swap, a long collection, a stuck
call) has been dropped from the group; another worker now owns its partitions and replays them
from the last commit. When the paused one resumes, it must not send the sessions and
recommendations of the batch it was in the middle of. Kafka transactions would fence such
writes at the broker; this guard costs nothing per event instead:

- a ticker notes the loop's progress every TICK_S and checks each gap it sees;
- every request the main thread writes to a broker is checked first (streams.faust_internals
  `check_before_sends`), so the records the producer held when the pause began are never sent;
- SIGCONT (the end of a SIGSTOP) also runs the check from a signal handler. That alone is not
  enough: the kernel may hand the signal to the consumer's thread, and then CPython runs the
  handler only when the main thread next checks for signals, after its loop may have flushed.

A stall longer than the session timeout less one heartbeat interval (the longest the group
coordinator can have gone without hearing from this worker before it gave the partitions away)
ends the process (exit 75, no commit, no flush): the orchestrator restarts it and it rejoins the
group as a new member. Shorter stalls are logged and let pass: the group still counts the worker
as alive.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

log = logging.getLogger(__name__)

TICK_S = 0.25
EXIT_CODE = 75  # EX_TEMPFAIL: restart me


class StallGuard:
    def __init__(self, session_timeout_s: float, heartbeat_s: float):
        self.limit_s = session_timeout_s - heartbeat_s
        self.warn_s = min(1.0, self.limit_s / 2)
        self.last_tick = None  # unarmed until the app runs: start-up and recovery are not stalls

    async def run(self) -> None:
        self.last_tick = time.monotonic()
        signal.signal(signal.SIGCONT, lambda signum, frame: self.check())
        while True:
            stalled = self.check()
            if stalled > self.warn_s + TICK_S:
                log.warning("event loop stalled for %.1f s", stalled)
            self.last_tick = time.monotonic()
            await asyncio.sleep(TICK_S)

    def check(self) -> float:
        """Seconds since the loop last ticked; ends the process if that is past the limit."""
        if self.last_tick is None:
            return 0.0
        stalled = time.monotonic() - self.last_tick
        if stalled > self.limit_s:
            log.error("worker stalled for %.1f s (limit %.1f s: session timeout less a heartbeat): its "
                      "partitions may belong to another worker now; exiting without writing or committing",
                      stalled, self.limit_s)
            logging.shutdown()
            os._exit(EXIT_CODE)
        return stalled
