"""The mlsec command line: a thin layer over the library."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from mlsec.config import Settings


def _registry_access(settings: Settings) -> contextlib.AbstractContextManager[object]:
    """The configured S3 registry; without one, the local registry `mlsec run` keeps, for this command."""
    if settings.s3_endpoint:
        return contextlib.nullcontext()
    from mlsec.registry.seaweed import local_registry

    print(f"mlsec: MLSEC_S3_ENDPOINT is not set: using the local registry under {settings.home / 's3'}",
          file=sys.stderr)
    return local_registry(settings.home / "s3")


def _run(args: argparse.Namespace) -> int:
    from mlsec.runner import decision_table, local_services, run_pipeline

    home = Path(args.home).resolve() if args.home else Settings().home.resolve()
    params = {"source": args.source or "", "model_name": args.model_name, "stage": args.stage,
              "environment": args.env, "epochs": args.epochs}
    print(f"mlsec: starting local S3 (SeaweedFS) under {home / 's3'}", flush=True)
    with local_services(home) as s3, contextlib.ExitStack() as stack:
        if args.containers:
            from mlsec.containers import built_image, podman_socket

            os.environ["DOCKER_HOST"] = stack.enter_context(podman_socket(home / "podman"))
            os.environ["MLSEC_IMAGE"] = built_image()
        print(f"mlsec: S3 on {s3.endpoint}; running the pipeline with kfp.local"
              f"{' in ' + os.environ['MLSEC_IMAGE'] + ' over podman' if args.containers else ''}", flush=True)
        result = run_pipeline(home, params, verbose=args.verbose, containers=args.containers)
    print("\nGate decisions\n" + decision_table(result.decisions))
    if result.prediction and result.endpoint:
        print(f"\nPrediction from {result.endpoint['url']} (model {result.endpoint['model']} "
              f"version {result.endpoint['version']}):")
        print(f"  input:  {json.dumps(result.prediction['input'])}")
        print(f"  output: {json.dumps(result.prediction['output'])}")
    print(f"\nPipeline {'succeeded' if result.succeeded else 'STOPPED'} in {result.seconds:.1f}s; "
          f"audit log: {home / 'audit' / 'decisions.jsonl'}; full log: {home / 'runs' / 'last-run.log'}")
    if not result.succeeded:
        print(f"reason: {result.error}", file=sys.stderr)
        return 1
    return 0


def _compile(args: argparse.Namespace) -> int:
    from pipelines.compile import compile_pipeline

    image = compile_pipeline(Path(args.output), args.env or Settings().environment, args.image)
    print(f"wrote {args.output} (every task in {image})")
    return 0


def _submit(args: argparse.Namespace) -> int:
    import tempfile

    import kfp
    from kfp import compiler

    from pipelines.secure_pipeline import secure_pipeline

    params = {}
    for p in args.param:
        key, sep, raw = p.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {p!r}: expected NAME=VALUE")
        try:
            params[key] = json.loads(raw)  # epochs=10 is a number, stage=dev a string
        except json.JSONDecodeError:
            params[key] = raw
    with tempfile.TemporaryDirectory() as tmp:
        package = str(Path(tmp) / "pipeline.yaml")
        compiler.Compiler().compile(secure_pipeline, package)
        run = kfp.Client(host=args.host).create_run_from_pipeline_package(
            package, arguments=params, experiment_name=args.experiment)
    print(f"submitted run {run.run_id}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from mlsec.registry.task import registry_from_env
    from mlsec.serve import auth
    from mlsec.serve.server import serve
    from mlsec.sign.methods import Trust, configured_trust

    settings = Settings()
    api_keys = Path(args.api_keys) if args.api_keys else settings.api_keys_file
    auth.load(api_keys)  # before pulling anything: a server without valid keys would not start
    trust = Trust("key", public_key=Path(args.public_key)) if args.public_key else configured_trust(settings.key_dir)
    if args.bundle:
        bundle = Path(args.bundle)
    else:
        from mlsec.registry import names

        with _registry_access(settings):
            # Resolved once, inside pull; the directory is named by the model only, never by a record's text.
            bundle = settings.home / "serving" / names.model(args.name)
            record = registry_from_env().pull(args.name, args.ref, bundle, trust)
            args.digest = args.digest or record.model_digest  # the server must load what was verified here
            print(f"mlsec: pulled {args.name} {record.version}, verified", file=sys.stderr)
    from mlsec.serve.guard import GuardConfig

    audit = None if args.audit_log == "-" else Path(args.audit_log or settings.home / "serve" / f"{args.name}-requests.jsonl")
    if audit:
        audit.parent.mkdir(parents=True, exist_ok=True)
    from mlsec.incident import blocklist_path

    guard = GuardConfig(max_body_bytes=args.max_body, rate=args.rate, flagged_rate=args.flagged_rate,
                        body_timeout_s=args.body_timeout, head_timeout_s=args.head_timeout,
                        idle_timeout_s=args.idle_timeout, write_timeout_s=args.write_timeout,
                        audit_log=audit, blocklist=Path(args.blocklist) if args.blocklist else blocklist_path(settings.home))
    serve(args.name, bundle, trust, host=args.host, port=args.port, api_keys=api_keys, guard=guard,
          expected_digest=args.digest, precision=args.precision)
    return 0


def _api_key(args: argparse.Namespace) -> int:
    from mlsec.serve import auth

    path = Path(args.file) if args.file else Settings().api_keys_file
    key = auth.create(path, args.client, args.model or None)
    print(f"API key for {args.client} (shown once; only its hash is kept in {path}):\n{key}")
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    from mlsec.sign import keys

    pair = keys.create(Path(args.dir) if args.dir else Settings().key_dir, overwrite=args.force)
    print(f"private key: {pair.private_key} (0600)\npublic key:  {pair.public_key}\n"
          f"signer:      {keys.fingerprint(pair.public_key)}")
    return 0


def _gate_key(args: argparse.Namespace) -> int:
    from mlsec.gates.attest import create_key, fingerprint, gate_key_dir
    from mlsec.registry import names

    directory = Path(args.dir) if args.dir else gate_key_dir(Settings().key_dir)
    private = directory / f"{names.stage(args.env)}.key"
    if private.exists() and not args.force:
        raise FileExistsError(f"{private} exists; refusing to replace a gate key (--force rotates it)")
    key = create_key(private)
    print(f"gate key for {args.env}: {private} (0600)\npublic key: {private.with_suffix('.pub')}\n"
          f"key id:     {fingerprint(key)}")
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    from mlsec.gates.attest import gate_trust
    from mlsec.gates.audit import AuditLog, S3AuditLog, witness_for
    from mlsec.gates.transparency import CheckpointStore, Report
    from mlsec.registry.s3 import client_from_env

    settings = Settings()
    if args.s3 and not settings.s3_endpoint:
        print("mlsec: error: --s3 verifies a cluster's log: set MLSEC_S3_ENDPOINT (and its credentials)",
              file=sys.stderr)
        return 2
    keys = gate_trust(settings.key_dir).for_env("audit")  # checkpoints count only if signed by these
    with _registry_access(settings):
        s3 = client_from_env()
        if args.s3:
            log: AuditLog | S3AuditLog = S3AuditLog(s3, settings.s3_bucket, keys=keys, checkpointed=True)
            where = f"s3://{settings.s3_bucket}/audit"
        else:
            log = AuditLog(Path(args.log) if args.log else settings.audit_log, CheckpointStore(s3, settings.s3_bucket),
                           keys=keys)
            where = str(log.path)
        try:
            report: Report = log.check() if isinstance(log, S3AuditLog) else \
                log.check(witness_for(settings.home, log), incremental=args.incremental)
        except ValueError as e:
            print(f"audit log INVALID: {e}", file=sys.stderr)
            return 1
    print(f"audit log OK: {report.entries} entries, chain intact, consistent with {report.checkpoints} signed "
          f"checkpoints ({where})")
    if report.unanchored:
        print(f"audit log WARNING: entries {report.anchored + 1}..{report.entries} are not covered by a signed "
              "checkpoint yet (written without S3, or the checkpoint after them failed)", file=sys.stderr)
    return 0


def _policy_root(args: argparse.Namespace) -> Path:
    from mlsec.config import policy_dir

    return Path(args.policies) if args.policies else policy_dir()


def _policy_eval(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from mlsec.gates.decision import read_decisions
    from mlsec.gates.engine import PolicyError, default_engine
    from mlsec.gates.gate import evaluate

    try:
        doc = json.loads(Path(args.input).read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"mlsec: error: evidence {args.input} is not readable JSON: {e}", file=sys.stderr)
        return 2
    try:
        history = read_decisions(Path(args.decisions)) if args.decisions else []
    except (OSError, ValueError, ValidationError, TypeError, KeyError) as e:
        print(f"mlsec: error: {args.decisions} is not a decisions file (a gate task's `decisions` output): {e}",
              file=sys.stderr)
        return 2
    settings = Settings()
    try:
        engine = default_engine(_policy_root(args), settings.opa_url,
                                settings.opa_timeout_s)
    except PolicyError as e:
        print(f"DENY: {e}", file=sys.stderr)
        return 1
    decision = evaluate(args.gate, doc, environment=args.env or settings.environment, engine=engine,
                        decisions=history)
    print(decision.model_dump_json(indent=2))
    print(decision.summary(), file=sys.stderr)
    return 0 if decision.allow else 1


def _policy_errors(root: Path) -> list[str]:
    """What `policy check` reports: a policy that does not compile, or policy data a gate cannot use."""
    from mlsec.gates.engine import InProcessEngine, PolicyError
    from mlsec.gates.gate import policy_problems

    try:
        engine = InProcessEngine(root, tests=True)
    except PolicyError as e:
        return [str(e)]
    try:
        return policy_problems(engine)
    finally:
        engine.close()


def _policy_check(args: argparse.Namespace) -> int:

    errors = _policy_errors(_policy_root(args))
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        return 1
    print("policies OK: every policy compiles, every gate has one that fails closed, and every "
          "environment's data has what its gates read")
    return 0


def _policy_test(args: argparse.Namespace) -> int:
    from mlsec.gates.engine import PolicyError
    from mlsec.gates.rego_tests import run_all

    try:
        results, cov = run_all(_policy_root(args), coverage=args.coverage)
    except PolicyError as e:
        print(str(e), file=sys.stderr)
        return 1
    failed = [(t, why) for t, ok, why in results if not ok]
    for t, why in failed:
        print(f"FAIL {t.file.name}::{t.rule}: {why}")
    print(f"{len(results) - len(failed)}/{len(results)} Rego tests passed")
    if args.coverage:
        print(cov.report())
    return 1 if failed else 0


def _policy_bundle(args: argparse.Namespace) -> int:
    from mlsec.gates.bundle import build
    from mlsec.sign.task import code_commit

    root = _policy_root(args)
    if errors := _policy_errors(root):  # a bundle the cluster's OPA would load must pass `policy check`
        print("\n".join(["refusing to build the bundle:", *errors]), file=sys.stderr)
        return 1
    signing_key = Path(args.signing_key) if args.signing_key else None
    try:
        digest = build(root, Path(args.output), args.revision or code_commit(), signing_key=signing_key,
                       key_id=args.key_id)
    except ValueError as e:  # an unreadable or wrong-type signing key
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} (policy sha256 {digest})")
    if signing_key is None:
        print("warning: the bundle is unsigned; an OPA started with --verification-key (manifests/opa.yaml, "
              "the chart) refuses it. Sign it with --signing-key.", file=sys.stderr)
    return 0


def _policy_replay(args: argparse.Namespace) -> int:
    from mlsec.gates.engine import InProcessEngine, PolicyError
    from mlsec.gates.replay import replay_run, runs

    root = Path(args.runs) if args.runs else Settings().home / "runs"
    try:
        engine = InProcessEngine(_policy_root(args))
    except PolicyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_dirs = runs(root)
    try:
        results = [r for run in run_dirs for r in replay_run(run, engine)]
    finally:
        engine.close()
    for r in results:
        line = f"{r.run}  {r.recorded.gate:<10} {r.recorded.environment:<8} {r.recorded.result.upper()} -> "
        if r.now is None:
            print(line + "?     evidence not in the run directory")
        elif r.changed:
            why = "; ".join(r.now.deny) if not r.now.allow else "; ".join(r.recorded.deny)
            print(f"{line}{r.now.result.upper()}  {why}")
    changed = sum(r.changed for r in results)
    missing = sum(r.now is None for r in results)
    print(f"replayed {len(results)} decisions from {len(run_dirs)} runs in {root} under policies "
          f"{engine.policy_sha256[:12]}: {changed} would change, {missing} without their evidence")
    return 1 if args.fail_on_change and changed else 0


def _policy_verify_bundle(args: argparse.Namespace) -> int:
    from mlsec.gates.bundle import BundleError, verify
    from mlsec.gates.engine import BUNDLE_DIGEST_KEY

    try:
        manifest = verify(Path(args.bundle), Path(args.public_key))
    except (BundleError, ValueError) as e:
        print(f"REFUSED: {e}", file=sys.stderr)
        return 1
    metadata = manifest.get("metadata") or {}
    print(f"verified {args.bundle}: revision {manifest.get('revision')}, "
          f"policy sha256 {metadata.get(BUNDLE_DIGEST_KEY)}")
    return 0


def _registry(args: argparse.Namespace) -> int:
    settings = Settings()
    with _registry_access(settings):
        return _registry_command(args, settings)


def _registry_command(args: argparse.Namespace, settings: Settings) -> int:
    import getpass

    from mlsec.gates.task import audit_sinks, configured_engine, configured_signer
    from mlsec.registry.task import registry_from_env
    from mlsec.sign.methods import configured_trust

    reg = registry_from_env()
    cmd = args.registry_cmd
    if cmd == "list":
        names = [args.name] if args.name else reg.models()
        for name in names:
            stages = reg.stages(name)
            for v in reg.versions(name):
                at = sorted(s for s, version in stages.items() if version == v)
                print(f"{name}\t{v}\t{','.join(at) or '-'}\t{'REVOKED' if reg.is_revoked(name, v) else ''}")
        return 0
    if cmd == "inventory":
        rows = reg.inventory()
        if args.json:
            print(json.dumps(rows, indent=2))
        for r in rows if not args.json else []:
            where = "; ".join(d.get("url") or d.get("namespace", "?") for d in r["deployed"]) or "-"
            print(f"{r['model']} {r['version']} stages={','.join(r['stages']) or '-'} signer={r['signer'][:19]} "
                  f"dataset={r['dataset'][:12]} gates={','.join(r['gates_passed'])} "
                  f"{'REVOKED ' if r['revoked'] else ''}deployed={where}")
        return 0
    if cmd == "show":
        version, _ = reg.resolve(args.name, args.ref)
        record = reg.record(args.name, version)
        if record is None:
            print(f"{args.name} {version} not found", file=sys.stderr)
            return 1
        doc = record.model_dump(mode="json")
        doc.update(revoked=reg.is_revoked(args.name, version), stages=reg.stages_of(args.name, version),
                   promotions=[d.model_dump(mode="json") for d in reg.promotion_decisions(args.name, version)],
                   deployments=reg.deployments(args.name, version))
        print(json.dumps(doc, indent=2))
        return 0
    if cmd == "revoke":
        env = args.env or settings.environment
        reg.revoke(args.name, args.version, args.reason, by=args.by or getpass.getuser(),
                   signer=configured_signer(settings, env))
        print(f"revoked {args.name} {args.version}")
        return 0
    if cmd == "approve":
        reg.approve(args.name, args.version, args.stage, args.identity, Path(args.key))
        print(f"approved {args.name} {args.version} for {args.stage} as {args.identity} (signed)")
        return 0
    trust = configured_trust(settings.key_dir)
    if cmd == "pull":
        record = reg.pull(args.name, args.ref, Path(args.output), trust)
        print(f"pulled {args.name} {record.version} ({record.model_digest}) to {args.output}, verified")
        return 0
    # The stage's governing environment judges, whatever --env says; a different --env is judged (and denied)
    # under the environment it names, so the mistake is recorded rather than silently corrected.
    env = args.env or reg.environment_for(args.stage)
    common: dict[str, Any] = dict(trust=trust, engine=configured_engine(settings), environment=env,
                  signer=configured_signer(settings, env),
                  author=args.author or getpass.getuser(), audit=audit_sinks(settings))
    if cmd == "promote":
        decision = reg.promote(args.name, args.version, args.stage, **common).decision
    else:
        decision = reg.rollback(args.name, args.stage, args.to, **common).decision
    print(decision.summary())
    for w in decision.warn:
        print(f"  warning: {w}")
    return 0 if decision.allow else 1


def _sample(args: argparse.Namespace) -> int:
    from mlsec.ingest import sample

    print(f"wrote {sample.write(Path(args.output), rows=args.rows, seed=args.seed)}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlsec", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the whole pipeline locally (kfp.local + local S3) and query the model")
    r.add_argument("--source", help="dataset path or s3:// URI (default: the bundled sample)")
    r.add_argument("--model-name", default="credit")
    r.add_argument("--stage", default="dev")
    r.add_argument("--env", default="", help="policy environment (default: MLSEC_ENV or dev)")
    r.add_argument("--epochs", type=int, default=30)
    r.add_argument("--home", help="state directory (default: MLSEC_HOME or ./.mlsec)")
    r.add_argument("--containers", action="store_true",
                   help="every task in the built image (make image) over podman, as uid 10001 on a read-only root")
    r.set_defaults(func=_run)

    c = sub.add_parser("compile", help="compile the pipeline to KFP IR YAML")
    c.add_argument("-o", "--output", default="pipeline.yaml")
    c.add_argument("--image", help="image for every task, REF@sha256:... (required for staging/prod; see make image)")
    c.add_argument("--env", default="", help="target environment (default: MLSEC_ENV or dev)")
    c.set_defaults(func=_compile)

    s = sub.add_parser("submit", help="compile and submit to a Kubeflow Pipelines endpoint")
    s.add_argument("--host", required=True)
    s.add_argument("--experiment", default="mlsec")
    s.add_argument("--param", action="append", default=[], metavar="K=V")
    s.set_defaults(func=_submit)

    v = sub.add_parser("serve", help="verify a signed model and serve it")
    v.add_argument("--name", required=True)
    v.add_argument("--ref", default="prod", help="stage alias or version in the registry")
    v.add_argument("--bundle", help="serve a local signed bundle instead of pulling from the registry")
    v.add_argument("--public-key")
    v.add_argument("--digest", help="refuse any model with another digest")
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--port", type=int, default=8080)
    v.add_argument("--api-keys", help="hashed API keys JSON (default: MLSEC_API_KEYS_FILE or .mlsec/serve/api-keys.json)")
    v.add_argument("--rate", default=os.environ.get("MLSEC_RATE_LIMIT", "50/second"), help="per-client limit")
    v.add_argument("--flagged-rate", default="1/second", help="limit for clients flagged for extraction")
    v.add_argument("--blocklist", help="clients to refuse, reread on change (default: MLSEC_HOME/serve/blocklist.json;"
                   " mlsec incident block-client writes it)")
    v.add_argument("--max-body", type=int, default=64 * 1024, help="largest request body in bytes")
    v.add_argument("--body-timeout", type=float, default=10.0,
                   help="seconds the whole request body may take to arrive (408 and close after that)")
    v.add_argument("--head-timeout", type=float, default=10.0,
                   help="seconds a request's line and headers may take to arrive (the connection is closed after that)")
    v.add_argument("--idle-timeout", type=int, default=65,
                   help="seconds a kept-alive connection may idle between requests (closed after that)")
    v.add_argument("--write-timeout", type=float, default=30.0,
                   help="seconds a response may sit unacknowledged by a client that stopped reading (reset after that)")
    v.add_argument("--precision", type=int, default=2, help="decimals of the returned probability")
    v.add_argument("--audit-log", help="request audit log, '-' for stdout (default: .mlsec/serve/<name>-requests.jsonl)")
    v.set_defaults(func=_serve)


    k = sub.add_parser("keys", help="signing keys and API keys").add_subparsers(dest="keys_cmd", required=True)
    kc = k.add_parser("create", help="create an ECDSA P-256 key pair (private key 0600)")
    kc.add_argument("--dir")
    kc.add_argument("--force", action="store_true")
    kc.set_defaults(func=_keys_create)
    gk = k.add_parser("gate-key", help="create an environment's Ed25519 gate key (signs its gate decisions)")
    gk.add_argument("env")
    gk.add_argument("--dir", help="default: MLSEC_GATE_TRUST_DIR or .mlsec/keys/gates")
    gk.add_argument("--force", action="store_true")
    gk.set_defaults(func=_gate_key)
    ak = k.add_parser("api-key", help="create an API key for a client of the model server (printed once)")
    ak.add_argument("client")
    ak.add_argument("--model", action="append", default=[], help="allow only these models (default: all)")
    ak.add_argument("--file", help="hashed key file (default: MLSEC_API_KEYS_FILE or .mlsec/serve/api-keys.json)")
    ak.set_defaults(func=_api_key)

    a = sub.add_parser("audit", help="decision audit log").add_subparsers(dest="audit_cmd", required=True)
    av = a.add_parser("verify", help="check the entries against every signed checkpoint (rewrites, truncation)")
    av.add_argument("--log", help="local log file (default: MLSEC_AUDIT_LOG or .mlsec/audit/decisions.jsonl)")
    av.add_argument("--s3", action="store_true", help="verify the cluster log in the registry bucket instead")
    av.add_argument("--incremental", action="store_true",
                    help="check only what was appended since the newest checkpoint verified here before (its tree "
                         "extended by the new entries must reach every newer signed checkpoint); default: everything")
    av.set_defaults(func=_audit_verify)

    pol = sub.add_parser("policy", help="gate policies").add_subparsers(dest="policy_cmd", required=True)
    pe = pol.add_parser("eval", help="evaluate one gate on an evidence file")
    pe.add_argument("--gate", required=True)
    pe.add_argument("--env", default="")
    pe.add_argument("--input", required=True, help="evidence JSON (a stage's `evidence` output)")
    pe.add_argument("--decisions", help="earlier gates' decisions (a gate task's `decisions` output)")
    pe.add_argument("--policies")
    pe.set_defaults(func=_policy_eval)
    pc = pol.add_parser("check", help="compile every policy; find gates that would deny every run (missing policy or data)")
    pc.add_argument("--policies")
    pc.set_defaults(func=_policy_check)

    pt = pol.add_parser("test", help="run the Rego unit tests with the real engine")
    pt.add_argument("--coverage", action="store_true")
    pt.add_argument("--policies")
    pt.set_defaults(func=_policy_test)
    pb = pol.add_parser("bundle", help="build (and sign) an OPA bundle for the cluster's OPA server")
    pb.add_argument("-o", "--output", default="bundle.tar.gz")
    pb.add_argument("--revision", help="bundle revision (default: the git commit)")
    pb.add_argument("--policies")
    pb.add_argument("--signing-key", help="ECDSA P-256 private key (PEM) to sign the bundle with (ES256)")
    pb.add_argument("--key-id", default="default", help="key id in the signature header (OPA's default: default)")
    pb.set_defaults(func=_policy_bundle)
    pr = pol.add_parser("replay", help="judge the decisions of past local runs again under these policies")
    pr.add_argument("--runs", help="run directories (default: $MLSEC_HOME/runs)")
    pr.add_argument("--policies")
    pr.add_argument("--fail-on-change", action="store_true", help="exit 1 if any decision would change")
    pr.set_defaults(func=_policy_replay)
    pv = pol.add_parser("verify-bundle", help="check a bundle's signature as OPA's --verification-key does")
    pv.add_argument("bundle")
    pv.add_argument("--public-key", required=True)
    pv.set_defaults(func=_policy_verify_bundle)

    reg = sub.add_parser("registry", help="the S3 model registry (MLSEC_S3_* and AWS credentials)")
    rs = reg.add_subparsers(dest="registry_cmd", required=True)
    rl = rs.add_parser("list", help="models, versions and their stages")
    rl.add_argument("name", nargs="?")
    rs.add_parser("inventory", help="every version: stages, signer, dataset, gates passed, deployments").add_argument(
        "--json", action="store_true")
    rsh = rs.add_parser("show", help="one version's record, promotions and deployments")
    rsh.add_argument("name")
    rsh.add_argument("ref", help="version or stage")
    for cmd, helptext in (("promote", "move a stage to a version through the promotion gate"),
                          ("rollback", "move a stage back to a version it ran before, through the gate")):
        rp = rs.add_parser(cmd, help=helptext)
        rp.add_argument("name")
        if cmd == "promote":
            rp.add_argument("version")
        else:
            rp.add_argument("--to", required=True, metavar="VERSION")
        rp.add_argument("--stage", required=True)
        rp.add_argument("--author", help="who asks for the promotion (default: your login); never counts as an approver")
        rp.add_argument("--env", default="", help="policy environment (default: the one governing --stage)")
    ra = rs.add_parser("approve", help="sign an approval of a version for a stage with your own key")
    ra.add_argument("name")
    ra.add_argument("version")
    ra.add_argument("--stage", required=True)
    ra.add_argument("--identity", required=True, help="who you are, as the stage's approvers list names you")
    ra.add_argument("--key", required=True, help="your ECDSA P-256 private key (mlsec keys create --dir ...)")
    rr = rs.add_parser("revoke", help="revoke a version for good: no gate allows it, no server loads it")
    rr.add_argument("name")
    rr.add_argument("version")
    rr.add_argument("--reason", required=True)
    rr.add_argument("--by")
    rr.add_argument("--env", default="", help="whose gate key signs the revocation (default: MLSEC_ENV or dev)")
    rpl = rs.add_parser("pull", help="download and verify a version")
    rpl.add_argument("name")
    rpl.add_argument("ref", help="version or stage")
    rpl.add_argument("-o", "--output", required=True)
    reg.set_defaults(func=_registry)

    from mlsec.threatmodel import commands as threat_commands

    threat_commands.add_parser(sub)
    from mlsec import incident

    incident.add_parser(sub)

    sm = sub.add_parser("sample", help="regenerate the synthetic sample dataset")
    sm.add_argument("-o", "--output", default="data/credit_sample.csv")
    sm.add_argument("--rows", type=int, default=4000)
    sm.add_argument("--seed", type=int, default=7)
    sm.set_defaults(func=_sample)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # Our own progress at INFO; libraries (kfp, kserve, botocore) only when something is wrong.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlsec").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:  # incl. SigningError, RegistryError
        print(f"mlsec: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(e, (BotoCoreError, ClientError)):  # unreachable endpoint, no credentials, access denied
            print(f"mlsec: error: S3 registry: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
