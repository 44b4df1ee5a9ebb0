"""The live page in a real headless browser (Debian's chromium): live recommendations appear, by
title, for shoppers whose events flow through a real worker on the real broker. No Triton here:
the worker answers from popularity, which the page must show as such."""
import re
import shutil
import subprocess
import time

import pytest

from console.live_page import LivePage
from console.live_view import LiveView
from shopguide.process import free_port
from streams.events import Event
from streams.replay import publish
from tests.fixtures.worker import all_partitions, wait_for

pytestmark = pytest.mark.kafka
TITLES = {f"toy-{n}": f"wooden train set {n}" for n in range(20)}


def browser() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("chromium is missing: `make test` installs Debian's chromium (make test-tools)")
    return found


def rendered(url: str) -> str:
    """The page's DOM after its script has fetched the state a few times."""
    command = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=4000",
               "--dump-dom", url]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout


def test_live_recommendations_appear_on_the_page(kafka_settings, start_worker, producer):
    settings = kafka_settings(triton_grpc=f"127.0.0.1:{free_port()}")  # nothing listens: popularity answers
    worker = start_worker(settings)
    wait_for(lambda: worker.assigned() == all_partitions(settings), what="worker assigned")
    view = LiveView(settings, TITLES).start()
    page = LivePage(view).start()
    try:
        assert page.url.startswith("http://127.0.0.1:")
        deadline = time.monotonic() + 60
        while not any(s["recommended"] for s in view.snapshot()["shoppers"]) and time.monotonic() < deadline:
            for n in range(5):
                publish(producer, settings, Event("click", f"shopper-{n}", "s", time.time(), items=(f"toy-{n}",)))
            producer.flush()
            time.sleep(0.5)
        dom = rendered(page.url)
    finally:
        page.stop()
        view.stop()
    rows = re.findall(r'<tr class="shopper">(.*?)</tr>', dom, re.S)
    answered = [row for row in rows if '<ol class="recommended">' in row]
    assert answered, dom
    assert any("wooden train set" in row for row in answered)  # titles, not ids
    assert any("fallback" in row for row in answered)
    assert re.search(r"recommendations <b>[0-9.]+</b>/s", dom)
