"""Throughput and p50/p99 latency under concurrent load: the hardened server (auth, rate limit,
validation, extraction and drift monitoring, audit log) beside the same model behind a bare
KServe endpoint, in one run. Target (issue 5): p99 at most 1.2x the bare endpoint.
--protocol v2 sends OIP binary tensors (tritonclient's default) instead of V1 JSON rows (issue 16).
The two servers take turns, in rounds of alternating order, so load from elsewhere on the machine
falls on both alike; the load average is printed with the result.
    .venv/bin/python benchmarks/bench_serving.py [--requests 2000] [--concurrency 4] [--protocol v1|v2] [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import requests

from mlsec.config import contract_path, sample_dataset
from mlsec.ingest import stage as ingest
from mlsec.ingest.contract import load_contract
from mlsec.serve import auth
from mlsec.serve.deploy import free_port, wait_ready
from mlsec.sign import keys, stage as signing
from mlsec.sign.attestation import Materials
from mlsec.train import stage as train

# The bare endpoint: the same verified model in KServe's ModelServer, no guard in front.
BARE = """
import sys
from pathlib import Path
from mlsec.serve.model import SignedModel
from mlsec.serve.server import BoundModelServer
m = SignedModel("credit", Path(sys.argv[1]), Path(sys.argv[2])); m.load()
BoundModelServer("127.0.0.1", http_port=int(sys.argv[3]), workers=1, enable_grpc=False).start([m])
"""


def _wait(url: str, log: Path) -> None:
    if not wait_ready(url, "credit", 180):  # a loaded machine takes a while to import torch and kserve
        raise TimeoutError(f"{url} not ready; its log ends:\n{log.read_text(errors='replace')[-2000:]}")


def binary(row: list[float]) -> tuple[bytes, dict[str, str]]:
    """One OIP binary tensor request, as tritonclient sends it: a JSON header, raw FP32 values, no Content-Type."""
    raw = np.asarray([row], dtype="<f4").tobytes()
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


def load(url: str, path: str, headers: list[dict[str, str]], bodies: list[tuple[bytes, dict[str, str]]],
         concurrency: int) -> tuple[float, list[float]]:
    def worker(chunk: list[tuple[bytes, dict[str, str]]]) -> list[float]:
        s, out = requests.Session(), []
        for i, (body, extra) in enumerate(chunk):
            t = time.perf_counter()
            r = s.post(f"{url}{path}", data=body, headers={**headers[i % len(headers)], **extra}, timeout=10)
            out.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, r.text
        return out

    chunks = [bodies[i::concurrency] for i in range(concurrency)]
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        lat = [x for part in pool.map(worker, chunks) for x in part]
    return len(bodies) / (time.perf_counter() - started), lat


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--protocol", choices=["v1", "v2"], default="v1")
    parser.add_argument("--rounds", type=int, default=10, help="turns each server takes, in alternating order")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = ingest.run(str(sample_dataset()), contract_path(), root / "data")
        if data.dataset is None:
            raise SystemExit("the sample dataset did not pass ingest; nothing to train on")
        model = train.run(data.dataset, load_contract(contract_path()), root / "model", "credit", train.TrainParams(epochs=3))
        pair = keys.create(root / "keys")
        bundle = signing.sign(model.model_dir, root / "signed", pair, Materials("d", "a" * 64, {}, "c", "i"), "bench")
        # Many clients, as in production: one client at this volume would (rightly) be flagged and throttled.
        api_keys = [auth.create(root / "api-keys.json", f"client-{i}") for i in range(100)]
        features = load_contract(contract_path()).features
        rows = pd.read_csv(sample_dataset())[features].to_dict("records")
        bodies: list[tuple[bytes, dict[str, str]]]
        if args.protocol == "v1":
            path, bodies = "/v1/models/credit:predict", [(json.dumps({"instances": [rows[i % len(rows)]]}).encode(), {})
                                                         for i in range(args.requests)]
        else:
            path, bodies = "/v2/models/credit/infer", [binary([rows[i % len(rows)][f] for f in features])
                                                       for i in range(args.requests)]
        bare_port, guarded_port = free_port(), free_port()
        bare = subprocess.Popen([sys.executable, "-c", BARE, str(bundle), str(pair.public_key), str(bare_port)],
                                stdout=(root / "bare.log").open("wb"), stderr=subprocess.STDOUT)
        guarded = subprocess.Popen([sys.executable, "-m", "mlsec.cli", "serve", "--name", "credit", "--bundle", str(bundle),
                                    "--public-key", str(pair.public_key), "--port", str(guarded_port),
                                    "--api-keys", str(root / "api-keys.json"), "--rate", "100000/second",
                                    "--audit-log", str(root / "requests.jsonl")],
                                   stdout=(root / "guarded.log").open("wb"), stderr=subprocess.STDOUT)
        try:
            # Binary bodies go without a Content-Type to the guard (as tritonclient sends them); bare kserve needs one.
            media = {"Content-Type": "application/json" if args.protocol == "v1" else "application/octet-stream"}
            with_keys = [{**(media if args.protocol == "v1" else {}), "Authorization": f"Bearer {k}"} for k in api_keys]
            servers = {"bare": (f"http://127.0.0.1:{bare_port}", [media]),
                       "guarded": (f"http://127.0.0.1:{guarded_port}", with_keys)}
            for name, (url, headers) in servers.items():
                _wait(url, root / f"{name}.log")
                load(url, path, headers, bodies[:200], args.concurrency)  # warm up
            seconds: dict[str, float] = {name: 0.0 for name in servers}
            latencies: dict[str, list[float]] = {name: [] for name in servers}
            rounds = max(1, min(args.rounds, args.requests // args.concurrency))
            for r in range(rounds):
                part = bodies[r::rounds]
                for name in ("bare", "guarded") if r % 2 == 0 else ("guarded", "bare"):
                    url, headers = servers[name]
                    rps, times = load(url, path, headers, part, args.concurrency)
                    seconds[name] += len(part) / rps
                    latencies[name] += times
            results = {name: (len(latencies[name]) / seconds[name], latencies[name]) for name in servers}
        finally:
            for p in (bare, guarded):
                p.terminate()
                p.wait(timeout=15)
    print(f"{args.requests} {args.protocol} requests, {args.concurrency} concurrent clients, one instance each, "
          f"{rounds} alternating rounds; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    for name, (rps, lat) in results.items():
        q = statistics.quantiles(lat, n=100)
        print(f"{name:<8} {rps:8.1f} req/s   p50 {q[49]:7.2f} ms   p99 {q[98]:7.2f} ms")
    ratio = statistics.quantiles(results["guarded"][1], n=100)[98] / statistics.quantiles(results["bare"][1], n=100)[98]
    print(f"p99 guarded / bare: {ratio:.2f}x (target <= 1.2x: {'met' if ratio <= 1.2 else 'NOT met'})")


if __name__ == "__main__":
    main()
