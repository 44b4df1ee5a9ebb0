"""The live page: a small HTTP server (loopback by default) showing a LiveView, refreshed every
second by the page itself. `/` is the page, `/state.json` what it draws."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from shopguide.errors import UserError

PAGE = resources.files("console").joinpath("live_page.html").read_bytes()


class LivePage:
    def __init__(self, view, host: str = "127.0.0.1", port: int = 0):
        handler = type("Handler", (_Handler,), {"view": view})
        try:
            self.server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise UserError(f"the live page cannot listen on {host}:{port} ({exc.strerror}); "
                            "choose another port with --page-port") from None
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> "LivePage":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    view = None

    def do_GET(self):
        if self.path in ("/", "/index.html"):
            self._send(PAGE, "text/html; charset=utf-8")
        elif self.path == "/state.json":
            self._send(json.dumps(self.view.snapshot()).encode(), "application/json")
        else:
            self.send_error(404)

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # the page polls every second: no access log
        pass
