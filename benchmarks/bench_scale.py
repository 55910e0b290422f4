"""Cost as the registry, the audit log and the models grow (issue 17): each figure at two sizes, measured in
the same run, and their ratio. Real SeaweedFS (the tests' LocalS3), the real OPA engine, model-signing.

    .venv/bin/python benchmarks/bench_scale.py [--quick] [--seed 17]

How it populates (stated because 1,000 full registrations and 100,000 appends would take most of an hour):
- registry: one real ingest + training run; every version is that model plus a file naming the version (its
  own digest), signed with model-signing, its training and signing gates judged by the real engine, the
  decisions signed with the dev gate key and stored by Registry.register. Each version's promotion to dev
  is a genuine signed promotion decision written where Registry.promote writes it (the promotion record
  and the alias move), without judging it again; the measured promotes run the whole Registry.promote.
  49 other models hold one registered version each.
- audit log: entries are AuditLog's own (make_entry, the same JSON lines and tree state); to reach 1,000
  and 100,000 they are written in bulk with a signed checkpoint every 1,000 entries (the real Notary), where
  the writer checkpoints after each append. The measured appends are real AuditLog.append calls, each
  publishing its checkpoint to SeaweedFS. A full verify therefore reads ~300 checkpoints at either size.
- signing: 4 sparse files (reads of holes cost what reads of cached pages cost: only the hashing).
--quick: 10 vs 100 versions, 1,000 vs 10,000 entries, 100 MiB vs 1 GiB, fewer repeats.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlsec.cli import main as cli
from mlsec.config import contract_path, policy_dir, sample_dataset
from mlsec.digest import sha256_file, tree_digest
from mlsec.evidence import Subject
from mlsec.gates.attest import GateTrust, create_key, load_signer, sign_decision
from mlsec.gates.audit import AuditLog, _State, make_entry
from mlsec.gates.decision import Decision
from mlsec.gates.engine import InProcessEngine
from mlsec.gates.gate import evaluate
from mlsec.gates.transparency import CheckpointStore, Notary, Witness, leaf_hash
from mlsec.ingest import stage as ingest
from mlsec.ingest.contract import load_contract
from mlsec.registry.evidence import PromotionEvidence
from mlsec.registry.seaweed import LocalS3
from mlsec.registry.stages import governing_environments
from mlsec.registry.store import Registry, _promotion_name, _promotion_prefix, policy_history
from mlsec.serve.model import SignedModel
from mlsec.sign import keys
from mlsec.sign import stage as signing
from mlsec.sign.attestation import Materials
from mlsec.train import stage as train

MODEL = "credit"


@dataclass
class Table:
    rows: list[tuple[str, str, float, float, str, float | None]] = field(default_factory=list)

    def add(self, what: str, unit: str, small: float, large: float, sizes: str, target: float | None = None) -> None:
        self.rows.append((what, unit, small, large, sizes, target))
        print(f"  {what}: {small:.4g} -> {large:.4g} {unit}", file=sys.stderr, flush=True)

    def show(self) -> None:
        print(f"\n{'measure':<46} {'sizes':<16} {'small':>10} {'large':>10} {'ratio':>7}  target")
        for what, unit, small, large, sizes, target in self.rows:
            ratio = large / small if small else float("inf")
            verdict = "" if target is None else f"<= {target:g}x {'met' if ratio <= target else 'NOT met'}"
            print(f"{what + ' (' + unit + ')':<46} {sizes:<16} {small:>10.4g} {large:>10.4g} {ratio:>6.2f}x  {verdict}")


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median(fn: Callable[[], Any], k: int) -> float:
    fn()  # warm: connections, imports, page cache
    return statistics.median(timed(fn) for _ in range(k))


def quiet(fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert fn() == 0
    return run


# -- registry ------------------------------------------------------------------------------------
@dataclass
class Chain:
    root: Path
    reg: Registry
    engine: InProcessEngine
    pair: keys.KeyPair
    gate_dir: Path
    data_ev: Any
    train_ev: Any
    model_dir: Path
    data_signed: Any = None
    count: int = 0

    def register(self, name: str, author: str = "bench") -> str:
        """One new version through the real signing and gates, stored by Registry.register."""
        self.count += 1
        model = self.root / "work" / "model"
        shutil.rmtree(self.root / "work", ignore_errors=True)
        shutil.copytree(self.model_dir, model)
        (model / "bench-version.json").write_text(json.dumps({"model": name, "n": self.count}))
        dev = load_signer(self.gate_dir / "dev.key")
        data_d = evaluate("data", self.data_ev, environment="dev", engine=self.engine)
        train_ev = self.train_ev.model_copy(update={"subject": Subject(name=name, digest=tree_digest(model))})
        train_d = evaluate("training", train_ev, environment="dev", engine=self.engine, decisions=[data_d])
        materials = Materials(dataset_uri="data/credit_sample.csv", dataset_digest=self.data_ev.subject.digest,
                              decision_digests={f"{d.gate}:{d.id}": d.digest for d in (data_d, train_d)},
                              code_commit="bench", image="local")
        bundle = signing.sign(model, self.root / "work" / "signed", self.pair, materials, "bench")
        sign_d = evaluate("signing", signing.evidence(bundle, name, self.pair.public_key), environment="dev",
                          engine=self.engine, decisions=[data_d, train_d])
        assert data_d.allow and train_d.allow and sign_d.allow, (data_d.deny, train_d.deny, sign_d.deny)
        attested = [sign_decision(d, n, dev) for d, n in ((data_d, self.data_ev.subject.name), (train_d, name),
                                                          (sign_d, name))]
        return self.reg.register(name, bundle, self.pair.public_key, evidence={"data": self.data_ev, "training": train_ev},
                                 decisions=attested, author=author).version

    def record_promotion(self, name: str, version: str) -> None:
        """A genuine signed promotion to dev, written as Registry.promote writes an allowed one."""
        record = self.reg.record(name, version)
        assert record is not None
        d = Decision(gate="promotion", environment="dev", allow=True, deny=[], subject=record.model_digest,
                     evidence_sha256="0" * 64, policy_sha256=self.engine.policy_sha256, engine=self.engine.name,
                     stage="dev")
        s = sign_decision(d, name, load_signer(self.gate_dir / "dev.key"))
        body = json.dumps(s.envelope, sort_keys=True, separators=(",", ":")).encode()
        self.reg._put_once(f"{self.reg._prefix(name, version)}attestations/{d.id}.dsse.json", body)
        self.reg._put_once(_promotion_prefix(name, "dev") + _promotion_name(d.time, d.id), body)
        self.reg._move_alias(name, "dev", record, d, self.reg.alias(name, "dev"))

    def promote(self, version: str, evidence_out: Path | None = None) -> Decision:
        d = self.reg.promote(MODEL, version, "dev", trust=self.pair.public_key, engine=self.engine, environment="dev",
                             signer=load_signer(self.gate_dir / "dev.key"), author="bench", evidence_out=evidence_out)
        assert d.decision.allow, d.decision.deny
        return d.decision


def bench_registry(t: Table, root: Path, srv: LocalS3, engine: InProcessEngine, small: int, large: int,
                   others: int, reps: int) -> tuple[PromotionEvidence, list[Decision]]:
    gate_dir = root / "gates"
    gate_dir.mkdir(parents=True)
    for env in ("dev", "staging", "prod", "audit"):
        create_key(gate_dir / f"{env}.key")
    print("registry: one real ingest + training run", file=sys.stderr, flush=True)
    contract = load_contract(contract_path())
    data = ingest.run(str(sample_dataset()), contract_path(), root / "data")
    assert data.dataset is not None, data.evidence
    trained = train.run(data.dataset, contract, root / "model", MODEL, train.TrainParams(epochs=2))
    pair = keys.create(root / "keys")
    # Two buckets, one per size, measured turn about: on a shared, loaded host the two sizes then see the
    # same load, which one registry measured before and after growing it would not.
    chains: dict[int, Chain] = {}
    for size in (small, large):
        reg = Registry(srv.client("admin"), f"bench-scale-{size}", retention_days=1,
                       gates=GateTrust.from_dir(gate_dir), stage_envs=governing_environments(policy_dir()))
        reg.ensure_bucket()
        chain = chains[size] = Chain(root / f"r{size}", reg, engine, pair, gate_dir, data.evidence, trained.evidence,
                                     trained.model_dir)
        for i in range(others):
            chain.register(f"other-{i:02d}")
        started = time.perf_counter()
        for n in range(1, size + 1):
            chain.record_promotion(MODEL, chain.register(MODEL))
            if n % 100 == 0:
                print(f"registry: {n}/{size} versions ({time.perf_counter() - started:.0f} s)", file=sys.stderr,
                      flush=True)
    os.environ.update({**srv.env_for("admin"), "MLSEC_GATE_TRUST_DIR": str(gate_dir), "MLSEC_HOME": str(root / "home")})
    evidence = root / "promotion-evidence.json"

    def pull(c: Chain) -> None:
        c.reg.pull(MODEL, "dev", root / "pulled", pair.public_key)

    def start_server(c: Chain) -> None:
        record = c.reg.pull(MODEL, "dev", root / "pulled", pair.public_key)
        SignedModel(MODEL, root / "pulled", pair.public_key, record.model_digest).load()

    def promote(c: Chain) -> None:
        head = c.reg.head(MODEL, "dev")
        assert head is not None and head.decision.subject
        c.promote(head.decision.subject[:16], evidence)

    def cli_in(c: Chain, *argv: str) -> Callable[[], Any]:
        def run() -> Any:
            os.environ["MLSEC_S3_BUCKET"] = c.reg.bucket
            return cli(list(argv))
        return quiet(run)

    samples: dict[tuple[str, int], list[float]] = {}
    for what, fn in (("pull", pull), ("promote", promote), ("start", start_server)):
        for size in (small, large):
            fn(chains[size])  # warm
        for _ in range(reps):
            for size in (small, large):
                samples.setdefault((what, size), []).append(timed(lambda: fn(chains[size])))
    for size in (small, large):  # once each: linear by nature, and minutes at 1,000 versions
        samples[("list", size)] = [timed(cli_in(chains[size], "registry", "list"))]
        samples[("inventory", size)] = [timed(cli_in(chains[size], "registry", "inventory"))]
    fig = {k: statistics.median(v) for k, v in samples.items()}
    sizes = f"{small}/{large} vers"
    t.add("pull by alias", "s", fig["pull", small], fig["pull", large], sizes, 1.3)
    t.add("promote (whole Registry.promote)", "s", fig["promote", small], fig["promote", large], sizes, 1.3)
    t.add("server start (pull + verify + load)", "s", fig["start", small], fig["start", large], sizes, 1.3)
    t.add(f"registry list ({others + 1} models)", "s", fig["list", small], fig["list", large], sizes)
    t.add(f"registry inventory ({others + 1} models)", "s", fig["inventory", small], fig["inventory", large], sizes)
    head = chains[large].reg.head(MODEL, "dev")
    assert head is not None and head.decision.subject
    v = chains[large].reg.verify_version(MODEL, head.decision.subject[:16], pair.public_key)
    return PromotionEvidence.model_validate_json(evidence.read_text()), [s.decision for s in v.decisions]


def bench_gate(t: Table, engine: InProcessEngine, ev: PromotionEvidence, base: list[Decision], small: int,
               large: int, reps: int) -> None:
    """The promotion gate over a version with `small`/`large` earlier decisions (repeated promotions), as the
    registry hands them to it (policy_history), and as they were handed before (every decision)."""
    def history(n: int) -> list[Decision]:
        extra = n - len(base)
        return [*base, *(Decision(gate="promotion", environment="dev", allow=True, deny=[], subject=ev.subject.digest,
                                  evidence_sha256="0" * 64, policy_sha256=engine.policy_sha256, engine=engine.name,
                                  stage="dev") for _ in range(max(0, extra)))]

    def gate(decisions: list[Decision], distinct: bool) -> Callable[[], Any]:
        def run() -> None:
            given = policy_history(decisions) if distinct else decisions
            assert evaluate("promotion", ev, environment="dev", engine=engine, decisions=given, stage="dev").allow
        return run

    few, many = history(small), history(large)
    gc.collect()
    gc.freeze()  # the registry phase's heap is not the gate's: keep its collections out of these timings
    runs: dict[tuple[bool, int], list[float]] = {}
    for _ in range(reps * 20):  # interleaved, so a burst of host load hits both sizes alike
        for distinct in (True, False):
            for n, decisions in ((small, few), (large, many)):
                runs.setdefault((distinct, n), []).append(timed(gate(decisions, distinct)))
    ms = {k: 1e3 * statistics.median(v) for k, v in runs.items()}
    sizes = f"{len(few)}/{len(many)} decisions"
    t.add("promotion gate, distinct facts", "ms", ms[True, small], ms[True, large], sizes, 1.5)
    t.add("promotion gate, every decision (before)", "ms", ms[False, small], ms[False, large], sizes)
    gc.unfreeze()


# -- audit log -----------------------------------------------------------------------------------
def bench_audit(t: Table, root: Path, srv: LocalS3, small: int, large: int, appends: int, seed: int) -> None:
    root.mkdir(parents=True)
    create_key(root / "audit.key")
    signer = load_signer(root / "audit.key")
    s3 = srv.client("admin")
    Registry(s3, "bench-audit", retention_days=1).ensure_bucket()
    store = CheckpointStore(s3, "bench-audit", retention_days=1)
    writer = AuditLog(root / "audit" / "decisions.jsonl", store, signer, [signer.public_key])
    verifier = AuditLog(writer.path, store, None, [signer.public_key])
    notary = Notary(store, writer.origin, signer, (signer.public_key,))
    witness = Witness(root / "witness.json")
    rng = random.Random(seed)
    writer.path.parent.mkdir(parents=True)
    state = _State()

    def decision(i: int) -> Decision:
        allow = rng.random() < 0.8
        return Decision(gate=rng.choice(["data", "training", "signing", "promotion"]), environment="dev",
                        allow=allow, deny=[] if allow else [f"reason {i}"], subject=f"{rng.getrandbits(256):064x}",
                        evidence_sha256=f"{i:064x}", policy_sha256="ab" * 32, engine="bench")

    def bulk(upto: int) -> None:
        """AuditLog's own entries and tree state, written in one go; a signed checkpoint every 1,000."""
        nonlocal state
        with writer.path.open("ab") as f:
            while state.frontier.size < upto:
                entry = make_entry(decision(state.frontier.size + 1), state.last)
                line = json.dumps(entry, sort_keys=True).encode()
                f.write(line + b"\n")
                state = _State(state.offset + len(line) + 1, entry["entry_sha256"],
                               state.frontier.append(leaf_hash(line)))
                if state.frontier.size % 1000 == 0 or state.frontier.size == upto:
                    notary.publish(state.frontier)
        (writer.path.with_name(writer.path.name + ".tree")).write_text(state.to_json())

    figures: dict[int, dict[str, float]] = {}
    for size in (small, large):
        print(f"audit: writing {size} entries", file=sys.stderr, flush=True)
        bulk(size)
        lat = sorted(timed(lambda: writer.append(decision(0))) for _ in range(appends))
        full = timed(lambda: verifier.check(witness))  # the full verify, which also remembers its checkpoint
        for _ in range(100):
            writer.append(decision(0))
        incremental = timed(lambda: verifier.check(witness, incremental=True))
        cp = timed(lambda: notary.open(store.get(writer.origin, size + appends + 100) or b"", "newest"))
        state = _State.load(writer.path.with_name(writer.path.name + ".tree")) or state
        figures[size] = {"p50": lat[len(lat) // 2], "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
                         "full": full, "incremental": incremental, "checkpoint": cp}
    sizes = f"{small // 1000}k/{large // 1000}k entries"
    t.add("audit append p50", "ms", 1e3 * figures[small]["p50"], 1e3 * figures[large]["p50"], sizes)
    t.add("audit append p99", "ms", 1e3 * figures[small]["p99"], 1e3 * figures[large]["p99"], sizes, 2)
    t.add("mlsec audit verify, full", "s", figures[small]["full"], figures[large]["full"], sizes)
    t.add("audit verify --incremental (100 new)", "s", figures[small]["incremental"], figures[large]["incremental"],
          sizes, 2)
    t.add("newest checkpoint read + verified", "ms", 1e3 * figures[small]["checkpoint"],
          1e3 * figures[large]["checkpoint"], sizes)
    print(f"  full verify at {large} entries: {figures[large]['full']:.1f} s (target <= 30 s on this machine: "
          f"{'met' if figures[large]['full'] <= 30 else 'NOT met'})", file=sys.stderr)


# -- signing -------------------------------------------------------------------------------------
def bench_signing(t: Table, root: Path, small_mib: int, large_mib: int) -> list[str]:
    pair = keys.create(root / "sign-keys")
    lines = []
    figures: dict[int, dict[str, float]] = {}
    for mib in (small_mib, large_mib):
        model = root / f"model-{mib}"
        model.mkdir()
        for i in range(4):  # sparse: hashing cost only
            with (model / f"shard-{i}.safetensors").open("wb") as f:
                f.truncate(mib * (1 << 20) // 4)
        files = sorted(str(p) for p in model.iterdir())
        sha = lambda: subprocess.run(["sha256sum", *files], check=True, capture_output=True)  # noqa: E731
        sha()
        t_sum = timed(sha)
        t_lib = timed(lambda: [sha256_file(Path(f)) for f in files])  # OpenSSL's SHA-256, one thread
        out = root / f"signed-{mib}"
        t_sign = timed(lambda: signing.sign(model, out, pair, Materials("d", "a" * 64, {}, "c", "i"), "b"))
        t_verify = timed(lambda: signing.verify(out, pair.public_key))
        shutil.rmtree(out)
        figures[mib] = {"sum": mib / t_sum, "lib": mib / t_lib, "sign": mib / t_sign, "verify": mib / t_verify,
                        "ratio": 2 * t_sum / (t_sign + t_verify)}
        lines.append(f"signing {mib} MiB (4 files): sha256sum {mib / t_sum:.0f} MiB/s, sign {mib / t_sign:.0f} MiB/s, "
                     f"verify {mib / t_verify:.0f} MiB/s; (2 x sha256sum)/(sign + verify) = "
                     f"{figures[mib]['ratio']:.2f} (target >= 1.5: {'met' if figures[mib]['ratio'] >= 1.5 else 'NOT met'}); "
                     f"against hashlib's single-threaded SHA-256 ({mib / t_lib:.0f} MiB/s): {2 * t_lib / (t_sign + t_verify):.2f}")
        print("  " + lines[-1], file=sys.stderr, flush=True)
    sizes = f"{small_mib}/{large_mib} MiB"
    for what in ("sum", "lib", "sign", "verify"):
        label = {"sum": "sha256sum", "lib": "hashlib sha256, 1 thread", "sign": "sign", "verify": "verify"}[what]
        t.add(label, "MiB/s", figures[small_mib][what],
              figures[large_mib][what], sizes)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--only", choices=["registry", "audit", "signing"], action="append")
    args = parser.parse_args()
    random.seed(args.seed)
    only = set(args.only or ["registry", "audit", "signing"])
    q = args.quick
    t = Table()
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mlsec-bench-scale-") as tmp:
        root = Path(tmp)
        engine = InProcessEngine(policy_dir())
        with LocalS3(root / "seaweed") as srv:
            if "registry" in only:
                ev, base = bench_registry(t, root / "reg", srv, engine, 10, 100 if q else 1000, 9 if q else 49,
                                          3 if q else 5)
                bench_gate(t, engine, ev, base, 5, 500, 3 if q else 5)
            if "audit" in only:
                bench_audit(t, root / "audit", srv, 1000, 10_000 if q else 100_000, 100 if q else 200, args.seed)
        if "signing" in only:
            notes = bench_signing(t, root, 100, 1024 if q else 4096)
    t.show()
    for line in notes:
        print(line)


if __name__ == "__main__":
    main()
