"""Test-only stand-in for `opa run --server`: OPA's Data API (POST /v1/data/<path>) on the same real engine.

There is no `opa` binary on this machine; this lets the HTTP client path be tested for real.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mlsec.gates.engine import InProcessEngine


class DataApiServer:
    def __init__(self, policy_root: Path, delay_s: float = 0.0) -> None:
        self.engine = InProcessEngine(policy_root)
        self.delay_s = delay_s
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                if not self.path.startswith("/v1/data/"):
                    self.send_error(404)
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(outer.delay_s)
                path = self.path.removeprefix("/v1/data/").replace("/", ".")
                from opa_bindings import OpaUndefinedError

                try:
                    doc = {"result": outer.engine.opa.eval_document(path, body.get("input"))}
                except OpaUndefinedError:
                    doc = {}  # OPA answers {} for an undefined document
                data = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> DataApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.engine.close()
