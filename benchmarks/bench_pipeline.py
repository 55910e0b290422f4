"""Local pipeline wall time (kfp.local) against the same stages called in-process, in one run.

Both sides start cold: the in-process side runs in a fresh interpreter (imports paid once), the
pipeline pays a process per task. The ratio is what kfp.local's isolation costs.
Target (issue 2): the pipeline costs at most 1.5x the stages' own time.
    .venv/bin/python benchmarks/bench_pipeline.py [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def in_process(work: Path, epochs: int) -> None:
    """The pipeline's stages and gates as plain function calls, same order, same artifacts."""
    import os

    from mlsec.gates.decision import read_decisions
    from mlsec.gates.task import run_gate
    from mlsec.ingest import task as ingest
    from mlsec.registry import task as promote
    from mlsec.serve import auth
    from mlsec.serve import task as serve
    from mlsec.serve.deploy import LocalServer
    from mlsec.sign import task as sign
    from mlsec.train import task as train

    # The served model needs an API key file, as in the pipeline run (the runner makes one there).
    work.mkdir(parents=True)
    os.environ["MLSEC_API_KEYS_FILE"] = str(work / "api-keys.json")
    auth.create(work / "api-keys.json", "bench")

    def gate(name: str, evidence: Path, history: Path | None, tag: str) -> Path:
        out = work / f"{tag}-decisions.json"
        assert run_gate(name, evidence, history, work / f"{tag}-decision.json", out, "dev") == "allow"
        return out

    ingest.run("", "", work / "data.csv", work / "data-evidence.json")
    d1 = gate("data", work / "data-evidence.json", None, "data")
    train.run(work / "data.csv", "", "credit", epochs, work / "model", work / "train-evidence.json")
    d2 = gate("training", work / "train-evidence.json", d1, "training")
    sign.run(work / "model", work / "data-evidence.json", d2, "credit", "bench", work / "signed", work / "sign-evidence.json")
    d3 = gate("signing", work / "sign-evidence.json", d2, "signing")
    promote.run(work / "signed", work / "train-evidence.json", work / "data-evidence.json", d3, "credit", "dev",
                "bench", work / "promoted-decisions.json", work / "release.json")
    d4 = gate("deployment", work / "release.json", work / "promoted-decisions.json", "deployment")
    serve.run(work / "release.json", d4, work / "endpoint.json")
    ep = json.loads((work / "endpoint.json").read_text())
    LocalServer(ep["pid"], ep["url"], ep["model"], Path(ep["log"])).stop()
    assert read_decisions(d4)[-1].allow


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--in-process", type=Path, help=argparse.SUPPRESS)  # the child side
    args = parser.parse_args()
    if args.in_process:
        in_process(args.in_process, args.epochs)
        return
    from mlsec.runner import local_services, run_pipeline

    with tempfile.TemporaryDirectory(prefix="mlsec-bench-") as tmp:
        home = Path(tmp)
        with local_services(home):
            started = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--epochs", str(args.epochs), "--in-process",
                            str(home / "inproc")], check=True, stdout=subprocess.DEVNULL)
            stages = time.perf_counter() - started
            result = run_pipeline(home, {"source": "", "model_name": "credit", "stage": "dev",
                                         "environment": "dev", "epochs": args.epochs}, predict=False)
            assert result.succeeded, result.error
    ratio = result.seconds / stages
    print(f"stages in-process : {stages:7.2f} s")
    print(f"kfp.local pipeline: {result.seconds:7.2f} s")
    print(f"ratio             : {ratio:7.2f}x  (target <= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
