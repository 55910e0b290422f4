"""Throughput and p50/p99 latency under concurrent load: the hardened server (auth, rate limit,
validation, extraction and drift monitoring, audit log) beside the same model behind a bare
KServe endpoint, in one run. Target (issue 5): p99 at most 1.2x the bare endpoint.
    .venv/bin/python benchmarks/bench_serving.py [--requests 2000] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


def _wait(url: str) -> None:
    if not wait_ready(url, "credit", 60):
        raise TimeoutError(url)


def load(url: str, headers: list[dict[str, str]], bodies: list[bytes], concurrency: int) -> tuple[float, list[float]]:
    def worker(chunk: list[bytes]) -> list[float]:
        s, out = requests.Session(), []
        for i, body in enumerate(chunk):
            t = time.perf_counter()
            r = s.post(f"{url}/v1/models/credit:predict", data=body, headers=headers[i % len(headers)], timeout=10)
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = ingest.run(str(sample_dataset()), contract_path(), root / "data")
        model = train.run(data.dataset, load_contract(contract_path()), root / "model", "credit", train.TrainParams(epochs=3))
        pair = keys.create(root / "keys")
        bundle = signing.sign(model.model_dir, root / "signed", pair, Materials("d", "a" * 64, {}, "c", "i"), "bench")
        # Many clients, as in production: one client at this volume would (rightly) be flagged and throttled.
        api_keys = [auth.create(root / "api-keys.json", f"client-{i}") for i in range(100)]
        features = load_contract(contract_path()).features
        rows = pd.read_csv(sample_dataset())[features].to_dict("records")
        bodies = [json.dumps({"instances": [rows[i % len(rows)]]}).encode() for i in range(args.requests)]
        bare_port, guarded_port = free_port(), free_port()
        bare = subprocess.Popen([sys.executable, "-c", BARE, str(bundle), str(pair.public_key), str(bare_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        guarded = subprocess.Popen([sys.executable, "-m", "mlsec.cli", "serve", "--name", "credit", "--bundle", str(bundle),
                                    "--public-key", str(pair.public_key), "--port", str(guarded_port),
                                    "--api-keys", str(root / "api-keys.json"), "--rate", "100000/second",
                                    "--audit-log", str(root / "requests.jsonl")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            results = {}
            json_only = [{"Content-Type": "application/json"}]
            with_keys = [{"Content-Type": "application/json", "Authorization": f"Bearer {k}"} for k in api_keys]
            for name, port, headers in (("bare", bare_port, json_only), ("guarded", guarded_port, with_keys)):
                url = f"http://127.0.0.1:{port}"
                _wait(url)
                load(url, headers, bodies[:200], args.concurrency)  # warm up
                results[name] = load(url, headers, bodies, args.concurrency)
        finally:
            for p in (bare, guarded):
                p.terminate()
                p.wait(timeout=15)
    print(f"{args.requests} requests, {args.concurrency} concurrent clients, one instance each")
    for name, (rps, lat) in results.items():
        q = statistics.quantiles(lat, n=100)
        print(f"{name:<8} {rps:8.1f} req/s   p50 {q[49]:7.2f} ms   p99 {q[98]:7.2f} ms")
    ratio = statistics.quantiles(results["guarded"][1], n=100)[98] / statistics.quantiles(results["bare"][1], n=100)[98]
    print(f"p99 guarded / bare: {ratio:.2f}x (target <= 1.2x: {'met' if ratio <= 1.2 else 'NOT met'})")


if __name__ == "__main__":
    main()
