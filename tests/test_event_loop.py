"""The worker's event loops: uvloop by default, asyncio's own on request, in every thread."""
import asyncio
import threading

import uvloop

from shopguide.config import Settings
from streams.app import use_event_loop


def loop_made_in_a_thread() -> asyncio.AbstractEventLoop:
    """Faust's consumer thread makes its loop this way."""
    made = []
    thread = threading.Thread(target=lambda: made.append(asyncio.new_event_loop()))
    thread.start()
    thread.join()
    return made[0]


def test_the_worker_runs_on_uvloop_by_default_and_on_asyncio_when_asked():
    try:
        use_event_loop(Settings().event_loop)
        loops = [asyncio.new_event_loop(), loop_made_in_a_thread()]
        assert all(isinstance(loop, uvloop.Loop) for loop in loops)
        use_event_loop(Settings.from_env({"SHOPGUIDE_EVENT_LOOP": "asyncio"}).event_loop)
        loops += [asyncio.new_event_loop(), loop_made_in_a_thread()]
        assert not any(isinstance(loop, uvloop.Loop) for loop in loops[2:])
        for loop in loops:
            loop.close()
    finally:
        asyncio.set_event_loop_policy(None)
