"""Run the signed model behind KServe's ModelServer, bound to the address we choose.

kserve 0.21 hard-codes host 0.0.0.0 in its REST server; the subclass sets the uvicorn host just
before serving, so a local run never listens beyond loopback. Its SIGTERM handler also forgets the
single-process REST server; the subclass tells uvicorn to exit so shutdown is prompt and clean.
"""

from __future__ import annotations

import logging
from pathlib import Path

from kserve import ModelServer

from mlsec.serve.auth import ApiKeys
from mlsec.serve.auth import load as load_keys
from mlsec.serve.guard import Guard, GuardConfig
from mlsec.serve.model import SignedModel
from mlsec.sign.methods import Trust

log = logging.getLogger(__name__)


class BoundModelServer(ModelServer):  # type: ignore[misc]
    def __init__(self, host: str, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.host = host

    async def _serve(self) -> None:
        if self._rest_server is not None:
            self._rest_server.config.host = self.host
        await super()._serve()

    def stop(self, sig: int) -> None:
        super().stop(sig)
        if self._rest_server is not None:
            self._rest_server._server.should_exit = True


def serve(name: str, bundle: Path, trust: Trust | Path, *, host: str, port: int, api_keys: Path,
          guard: GuardConfig, expected_digest: str | None = None, precision: int = 2) -> None:
    from kserve.model_server import app

    keys = ApiKeys(load_keys(api_keys))  # no keys, no server: it never runs unauthenticated
    model = SignedModel(name, bundle, trust, expected_digest, precision=precision)
    model.load()  # raises before any socket opens if the bundle does not verify
    app.add_middleware(Guard, model=name, cfg=model.cfg, keys=keys, settings=guard, **Guard.monitors(model.cfg))
    log.info("serve: %s (%s) verified, listening on %s:%d", name, model.digest, host, port)
    BoundModelServer(host, http_port=port, workers=1, enable_grpc=False, enable_docs_url=False).start([model])
