"""Test-only stand-in for `opa run --server --bundle bundle.tar.gz`: OPA's Data API on the same real engine.

There is no `opa` binary on this machine; this lets the HTTP client path be tested for real. Like OPA
started as the cluster starts it (`--bundle --verification-key`), it loads a signed bundle built by
`mlsec policy bundle --signing-key`, checks its signature first, and keeps the bundle's .manifest at
data.system.bundles[<bundle path>].manifest, readable through GET /v1/data/system/bundles.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mlsec.gates.bundle import build, verify
from mlsec.gates.engine import InProcessEngine
from mlsec.sign import keys


class DataApiServer:
    """delay_s slows decisions (POST) only; as_bundle=False loads plain files, like `opa run -s dir/`."""

    def __init__(self, policy_root: Path, delay_s: float = 0.0, *, as_bundle: bool = True) -> None:
        self._tmp = tempfile.TemporaryDirectory()
        if as_bundle:
            bundle = Path(self._tmp.name) / "bundle.tar.gz"
            pair = keys.create(Path(self._tmp.name) / "policy-key")
            build(policy_root, bundle, "test", signing_key=pair.private_key)
            manifest = verify(bundle, pair.public_key)
            root = Path(self._tmp.name) / "loaded"
            with tarfile.open(bundle) as tar:
                tar.extractall(root, filter="data")
            self.engine = InProcessEngine(root)
            self.engine.opa.add_data({"bundles": {str(bundle): {"manifest": manifest}}}, "system")
        else:
            self.engine = InProcessEngine(policy_root)
        self.delay_s = delay_s
        outer = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as OPA's Go server does (no new connection per decision); without Nagle, which
            # would hold the body back behind the headers until the client's delayed ACK (~40 ms).
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _answer(self, path: str, input_doc: object) -> None:
                from opa_bindings import OpaUndefinedError

                try:
                    doc = {"result": outer.engine.opa.eval_document(path.replace("/", "."), input_doc)}
                except OpaUndefinedError:
                    doc = {}  # OPA answers {} for an undefined document
                data = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                if not self.path.startswith("/v1/data/"):
                    self.send_error(404)
                    return
                self._answer(self.path.removeprefix("/v1/data/"), None)

            def do_POST(self) -> None:  # noqa: N802
                if not self.path.startswith("/v1/data/"):
                    self.send_error(404)
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(outer.delay_s)
                self._answer(self.path.removeprefix("/v1/data/"), body.get("input"))

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
        self._tmp.cleanup()


if __name__ == "__main__":
    # A separate process, like a real `opa run`: `python opa_data_api.py POLICY_ROOT` prints the URL and
    # serves until its standard input closes (the benchmark uses this; tests use the class in-process).
    import sys

    with DataApiServer(Path(sys.argv[1])) as server:
        print(server.url, flush=True)
        sys.stdin.read()
