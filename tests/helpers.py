"""Shared test helpers (not tests): spawned-job functions, process checks, a loopback chat server, a failing backend.

Spawned worker processes import functions from here by module name (``tests.helpers``), so they live at module level.
"""
import contextlib
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def sleep_and_record(path: str) -> int:
    """A job that appends its pid to ``path`` and sleeps (for killing its parent)."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(120)
    return os.getpid()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


@contextlib.contextmanager
def chat_server(respond):
    """An OpenAI-compatible ``/v1/chat/completions`` on loopback; ``respond(payload)`` returns ``(status, body)``
    (body a JSON-able dict, or None for an empty error response). Yields the base URL (``http://127.0.0.1:N/v1``)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            status, body = respond(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(status)
            if body is None:
                self.end_headers()
                return
            data = json.dumps(body).encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    finally:
        srv.shutdown()
        srv.server_close()


class ExplodingBackend:
    """A rollout backend whose ``generate`` raises, counting its closes (``name``: its ``rollout_backend``)."""

    def __init__(self, name: str | None = None):
        self.closed = 0
        if name:
            self.rollout_backend = name

    def reseed(self, seed):
        pass

    def generate(self, requests):
        raise RuntimeError("engine crashed")

    def load_weights(self, model=None, adapter_dir=None):
        pass

    def close(self):
        self.closed += 1
