"""Run the signed model behind KServe's ModelServer, bound to the address we choose.

kserve 0.21 hard-codes host 0.0.0.0 in its REST server; the subclass sets the uvicorn host just
before serving, so a local run never listens beyond loopback; it also gives uvicorn the connection limits
it lacks (mlsec.serve.connection: head and write deadlines, head size, pipelined requests). Its SIGTERM handler also forgets the
single-process REST server; the subclass tells uvicorn to exit so shutdown is prompt and clean.

kserve logs every error with its traceback (whose frames hold the request's values) and answers with
str(exception); here a BadRequest from the model becomes its own 4xx naming the field, logged as one
line without the value, and no kserve or uvicorn log record carries a traceback.
"""

from __future__ import annotations

import logging
from pathlib import Path


from fastapi import Request
from fastapi.responses import JSONResponse
from kserve import ModelServer

from mlsec.serve.auth import ApiKeys
from mlsec.serve.auth import load as load_keys
from mlsec.serve.connection import protocol
from mlsec.serve.guard import Guard, GuardConfig
from mlsec.serve.inputs import BadRequest
from mlsec.serve.model import SignedModel
from mlsec.sign.methods import Trust

log = logging.getLogger(__name__)
QUIET = ("kserve", "kserve.trace", "uvicorn", "uvicorn.error", "uvicorn.access")


class NoTracebacks(logging.Filter):
    """An error record keeps its message and the exception's type; the traceback and its values go."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            exc = record.exc_info[1]
            record.msg, record.args = "%s: %s", (str(record.msg)[:80], type(exc).__name__)
            record.exc_info = record.exc_text = record.stack_info = None
        return True


def quiet_logs() -> None:
    for name in ("", *QUIET):
        logger = logging.getLogger(name)
        if not any(isinstance(f, NoTracebacks) for f in logger.filters):
            logger.addFilter(NoTracebacks())
        for handler in logger.handlers:
            if not any(isinstance(f, NoTracebacks) for f in handler.filters):
                handler.addFilter(NoTracebacks())


async def bad_request(_: Request, exc: Exception) -> JSONResponse:
    status = getattr(exc, "status", 400)
    log.info("serve: request refused by the model (%d)", status)
    return JSONResponse(status_code=status, content={"error": str(exc)})


class BoundModelServer(ModelServer):  # type: ignore[misc]
    def __init__(self, host: str, guard: GuardConfig, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.host, self.guard = host, guard
        quiet_logs()  # after kserve has configured its loggers

    async def _serve(self) -> None:
        if self._rest_server is not None:
            self._rest_server.config.host = self.host
            # uvicorn has no deadline for a request's head (slowloris) nor for writing a response
            self._rest_server.config.http = protocol(self.guard.head_timeout_s, self.guard.write_timeout_s)
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
    quiet_logs()
    app.add_exception_handler(BadRequest, bad_request)
    app.add_middleware(Guard, model=name, cfg=model.cfg, keys=keys, settings=guard, version=model.digest,
                       **Guard.monitors(model.cfg))
    log.info("serve: %s (%s) verified, listening on %s:%d", name, model.digest, host, port)
    BoundModelServer(host, guard, http_port=port, workers=1, enable_grpc=False,
                     enable_docs_url=False, timeout_keep_alive=guard.idle_timeout_s).start([model])
