"""`mlsec run`: the whole pipeline on this machine with kfp.local, against a real local S3 server."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from mlsec.config import Settings, sample_dataset
from mlsec.gates.engine import GO_RUNTIME_ENV
from mlsec.registry.seaweed import LocalS3, local_registry
from mlsec.serve import auth
from mlsec.serve.deploy import LocalServer

@dataclass
class RunResult:
    succeeded: bool
    error: str | None
    decisions: list[dict[str, Any]]
    run_dir: Path | None
    endpoint: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    seconds: float = 0.0


@contextlib.contextmanager
def local_services(home: Path) -> Iterator[LocalS3]:
    """SeaweedFS on loopback plus the environment every task reads; both undone on exit."""
    go_defaults = {k: v for k, v in GO_RUNTIME_ENV.items() if k not in os.environ}
    env = {"MLSEC_HOME": str(home), "MLSEC_DEPLOY_TARGET": "local",
           "MLSEC_API_KEYS_FILE": str(home / "serve" / "demo-api-keys.json"), **go_defaults}
    with local_registry(home / "s3", env) as s3:
        yield s3


# What a person watching `mlsec run` needs; everything else goes to the run's log file.
_PROGRESS = re.compile(
    r"Executing task|finished with status|\] (ALLOW|DENY):|train: (epoch|accuracy)|ingest: contract"
    r"|registry: (upload|.* -> )|serve: |pipeline stopped by|Error|Traceback"
)


class _Progress(io.TextIOBase):
    """stdout during a run: every line to the log, progress lines also to the terminal."""

    def __init__(self, log: TextIO, terminal: TextIO, verbose: bool) -> None:
        self._log, self._terminal, self._verbose, self._buf = log, terminal, verbose, ""

    def write(self, s: str) -> int:
        self._log.write(s)
        self._buf += s
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            if self._verbose or _PROGRESS.search(line):
                self._terminal.write(line.strip() + "\n")
                self._terminal.flush()
        return len(s)

    def flush(self) -> None:
        self._log.flush()


def _audit_entries(path: Path, skip: int) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()[skip:]]


def run_pipeline(home: Path, params: dict[str, Any], *, predict: bool = True, verbose: bool = False,
                 containers: bool = False) -> RunResult:
    """Runs the pipeline; assumes local_services() is active. Stops the server it started unless predict=False.

    containers: every task in the built image (mlsec.containers); the model server then lives and ends
    inside the serve task's container, so there is no server left to query or stop afterwards.
    """
    import warnings

    from kfp import local

    from pipelines.secure_pipeline import secure_pipeline

    # Running the image's own code in this venv is the point of a local run, not an accident.
    warnings.filterwarnings("ignore", message="You may be attemping to run a task", category=RuntimeWarning)
    # The GPU, CPU and memory requests are for the cluster; locally, training uses CUDA only if this machine has it.
    warnings.filterwarnings("ignore", message=r".*settings \[.*\] have no effect", category=UserWarning)

    settings = Settings()
    keys_file = settings.api_keys_file
    keys_file.unlink(missing_ok=True)  # a fresh key for each demo run; only its hash is on disk
    api_key = auth.create(keys_file, "demo")
    audit_before = len(settings.audit_log.read_text().splitlines()) if settings.audit_log.exists() else 0
    runs = home / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    if containers:
        from mlsec import containers as ct

        ct.hand_to_task_user(home)
        ct.install(ct.state_mounts(home))
        runner: Any = ct.docker_runner(ct.task_environment(os.environ), home)
    else:
        runner = local.SubprocessRunner(use_venv=False)
    local.init(runner=runner, pipeline_root=str(runs), raise_on_error=True)
    started = time.perf_counter()
    error = None
    with (runs / "last-run.log").open("w") as logfile, \
            contextlib.redirect_stdout(_Progress(logfile, sys.stdout, verbose)):
        try:
            secure_pipeline(**params)
        except RuntimeError as e:
            error = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # kfp colours its messages
    if error:
        # kfp only says which task failed; the task's own last error line says why.
        causes = [line.strip() for line in (runs / "last-run.log").read_text().splitlines()
                  if re.search(r"^\s*(\w+(Error|Exception|Denied)|SystemExit|pipeline stopped by)\b", line)]
        if causes:
            error = f"{error}\n{causes[-1]}"
    seconds = time.perf_counter() - started
    run_dir = max(runs.glob("mlsec-secure-pipeline-*"), key=lambda p: p.stat().st_mtime, default=None)
    result = RunResult(succeeded=error is None, error=error, run_dir=run_dir, seconds=seconds,
                       decisions=_audit_entries(settings.audit_log, audit_before))
    endpoint_file = run_dir / "serve" / "endpoint" if run_dir else None
    if endpoint_file and endpoint_file.exists() and not containers:
        result.endpoint = json.loads(endpoint_file.read_text())
        server = LocalServer(pid=result.endpoint["pid"], url=result.endpoint["url"],
                             model=result.endpoint["model"], log=Path(result.endpoint["log"]))
        try:
            if predict:
                result.prediction = {"input": sample_instance(),
                                     "output": server.predict([sample_instance()], api_key)}
        finally:
            server.stop()
    return result


def sample_instance() -> dict[str, float]:
    from mlsec.config import contract_path
    from mlsec.ingest.contract import load_contract

    features = load_contract(contract_path()).features
    row = pd.read_csv(sample_dataset(), nrows=1)[features].iloc[0]
    return {f: float(row[f]) for f in features}


def decision_table(entries: list[dict[str, Any]]) -> str:
    rows = [("gate", "result", "subject", "reasons / warnings")]
    for e in entries:
        notes = e["reasons"] or [f"warn: {w}" for w in e["warnings"]] or ["all checks passed"]
        rows.append((e["gate"], e["result"].upper(), (e["subject"] or "-")[:12], "; ".join(notes)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3] for r in rows
    )
