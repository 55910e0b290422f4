"""Sign + verify a 1 GiB model directory beside `sha256sum` over the same bytes, in one run.

Target (issue 4): at least 0.8x sha256sum's throughput. Signing and verifying each hash every byte,
so each is compared with sha256sum on its own, and the pair with two sha256sum passes.
    .venv/bin/python benchmarks/bench_signing.py [--mib 1024] [--files 4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from mlsec.sign import keys, stage
from mlsec.sign.attestation import Materials


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlsec-bench-sign-") as tmp:
        root = Path(tmp)
        model = root / "model"
        model.mkdir()
        chunk = 64 << 20
        for i in range(args.files):
            with (model / f"shard-{i:03d}.safetensors").open("wb") as f:
                for _ in range(args.mib * (1 << 20) // args.files // chunk):
                    f.write(os.urandom(chunk))
        size = sum(p.stat().st_size for p in model.iterdir())
        pair = keys.create(root / "keys")
        files = sorted(str(p) for p in model.iterdir())
        subprocess.run(["sha256sum", *files], check=True, capture_output=True)  # warm the page cache
        t_sum = timed(lambda: subprocess.run(["sha256sum", *files], check=True, capture_output=True))
        t_sign = timed(lambda: stage.sign(model, root / "signed", pair, Materials("d", "a" * 64, {}, "c", "i"), "b"))
        t_verify = timed(lambda: stage.verify(root / "signed", pair.public_key))
    mib = size / (1 << 20)
    rate = lambda t: mib / t  # noqa: E731
    print(f"{mib:.0f} MiB in {args.files} files")
    print(f"sha256sum      : {t_sum:6.2f} s  {rate(t_sum):7.1f} MiB/s")
    print(f"sign           : {t_sign:6.2f} s  {rate(t_sign):7.1f} MiB/s  ratio {t_sum / t_sign:.2f}x (includes copying the model into the bundle)")
    print(f"verify         : {t_verify:6.2f} s  {rate(t_verify):7.1f} MiB/s  ratio {t_sum / t_verify:.2f}x (hashes twice: signature + digest)")
    pair_ratio = 2 * t_sum / (t_sign + t_verify)
    print(f"sign + verify  : {t_sign + t_verify:6.2f} s  vs 2 x sha256sum {2 * t_sum:.2f} s  ratio {pair_ratio:.2f}x "
          f"(target >= 0.8x: {'met' if pair_ratio >= 0.8 else 'NOT met'})")


if __name__ == "__main__":
    main()
