"""Incident response that acts (docs/incident-response.md): block a client on a running server, revoke a
model and move its aliases back through the promotion gate, rotate the model-signing key (rotate.py);
every action appended to a hash-chained incident log.

The blocklist is a JSON file the server's guard rereads when it changes (one stat per request), so a
block takes effect on the next request without a restart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from mlsec.fsutil import write_secret

log = logging.getLogger(__name__)


def blocklist_path(home: Path) -> Path:
    """Where `mlsec serve` and `mlsec incident block-client` meet when neither is told otherwise."""
    return home / "serve" / "blocklist.json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Blocklist:
    path: Path
    _seen: tuple[int, int, int] | None = field(default=None, init=False)
    _blocked: frozenset[str] = field(default=frozenset(), init=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    def blocked(self, client: str) -> bool:
        """Whether the client is blocked now; the file is reread only when its inode, size or mtime changed.
        A file that cannot be parsed keeps the last list read (an unblock needs a valid file too)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._seen, self._blocked = None, frozenset()
            return False
        seen = (st.st_ino, st.st_size, st.st_mtime_ns)
        if seen != self._seen:
            try:
                self._blocked = frozenset(read(self.path))
                self._seen = seen
            except ValueError as e:
                log.error("serve: blocklist %s unreadable, keeping the previous one: %s", self.path, e)
        return client in self._blocked


def read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read blocklist {path}: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("blocked", {}), dict):
        raise ValueError(f"{path} must be {{\"blocked\": {{client: {{reason, at, by}}}}}}")
    return dict(doc.get("blocked", {}))


def block(path: Path, client: str, reason: str, by: str) -> dict[str, Any]:
    """Adds the client; written as a fresh 0600 file renamed into place, so the server never reads half."""
    if not client or not client.isprintable():
        raise ValueError("client id must be a non-empty printable string")
    blocked = read(path)
    entry = {"reason": reason, "at": _now(), "by": by}
    blocked[client] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    write_secret(path, json.dumps({"blocked": blocked}, indent=2, sort_keys=True).encode())
    return entry


# -- the incident log ------------------------------------------------------------------------------
def incident_log(home: Path) -> Path:
    return home / "incidents.jsonl"


def record(log_path: Path, action: str, **details: Any) -> dict[str, Any]:
    """Appends one action, chained to the previous line by its SHA-256 (verify_log finds edits and cuts)."""
    lines = log_path.read_text().splitlines() if log_path.exists() else []
    prev = hashlib.sha256(lines[-1].encode()).hexdigest() if lines else "0" * 64
    entry = {"action": action, "at": _now(), "prev": prev, **details}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")
    return entry


def verify_log(log_path: Path) -> list[dict[str, Any]]:
    prev, entries = "0" * 64, []
    for n, line in enumerate(log_path.read_text().splitlines(), 1):
        entry = json.loads(line)
        if entry.get("prev") != prev:
            raise ValueError(f"{log_path}:{n}: chain broken (an entry before it was changed or removed)")
        prev = hashlib.sha256(line.encode()).hexdigest()
        entries.append(entry)
    return entries


# -- revoke a model --------------------------------------------------------------------------------
@dataclass(frozen=True)
class AliasMove:
    stage: str
    to: str | None          # the last good version, or None when the stage never ran another
    allowed: bool
    reasons: list[str]


def revoke_model(reg: Any, name: str, version: str, reason: str, by: str, revoke_signer: Any,
                 promote_kwargs: Any) -> list[AliasMove]:
    """Revokes the version (signed, write-once: no gate allows it and no server loads it from now on), then
    moves every stage that pointed at it back to the newest earlier version of that stage that is not
    revoked, through the promotion gate (a rollback: the gate judges it again). promote_kwargs(stage) gives
    the rollback's trust, engine, environment, signer, author and audit."""
    pointing = reg.stages_of(name, version)
    reg.revoke(name, version, reason, by=by, signer=revoke_signer)
    moves = []
    for stage in pointing:
        earlier = [s.decision.subject[:16] for s in reg.promotions(name, stage)]
        good = next((v for v in reversed(earlier) if v != version and not reg.is_revoked(name, v)), None)
        if good is None:
            moves.append(AliasMove(stage, None, False, [f"{stage} never ran another version; it stays on the "
                                                        "revoked one, which pull and serve refuse"]))
            continue
        d = reg.rollback(name, stage, good, **promote_kwargs(stage)).decision
        moves.append(AliasMove(stage, good, d.allow, list(d.deny)))
    return moves


# -- CLI (thin) ------------------------------------------------------------------------------------
def add_parser(sub: Any) -> None:
    inc = sub.add_parser("incident", help="incident response that acts and is audited (docs/incident-response.md)")
    ins = inc.add_subparsers(dest="incident_cmd", required=True)
    rv = ins.add_parser("revoke-model", help="revoke a version; move its aliases back to the last good version")
    rv.add_argument("name")
    rv.add_argument("version")
    rv.add_argument("--reason", required=True)
    rv.add_argument("--by", help="who acts (default: your login)")
    bc = ins.add_parser("block-client", help="the running server refuses this client from its next request")
    bc.add_argument("client")
    bc.add_argument("--reason", required=True)
    bc.add_argument("--by", help="who acts (default: your login)")
    bc.add_argument("--blocklist", help="the file the server watches (default: MLSEC_HOME/serve/blocklist.json)")
    rk = ins.add_parser("rotate-signing-key", help="new model-signing key; re-sign what prod and staging serve "
                        "once it verifies with the old key; the old key verifies only until a date")
    rk.add_argument("--old-key-valid-until", type=_day, default=None, metavar="YYYY-MM-DD",
                    help="last day (UTC, YYYY-MM-DD) a signature by the old key is accepted (default: in 30 days)")
    rk.add_argument("--stage", action="append", metavar="STAGE", help="stages whose versions are re-signed (default: prod, staging)")
    rk.add_argument("--by", help="who acts (default: your login)")
    inc.set_defaults(func=run)


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as e:
        raise ValueError(f"{value!r} is not a date (YYYY-MM-DD)") from e


def run(args: Any) -> int:
    import getpass

    from mlsec.config import Settings

    settings = Settings()
    by = args.by or getpass.getuser()
    audit_path = incident_log(settings.home)
    if args.incident_cmd == "block-client":
        path = Path(args.blocklist) if args.blocklist else blocklist_path(settings.home)
        block(path, args.client, args.reason, by)
        record(audit_path, "block-client", client=args.client, reason=args.reason, by=by, blocklist=str(path))
        print(f"blocked {args.client}: the server watching {path} refuses it from its next request")
        return 0
    from mlsec.cli import _registry_access
    from mlsec.gates.task import audit_sinks, configured_engine, configured_signer
    from mlsec.registry.task import registry_from_env
    from mlsec.sign.methods import configured_trust

    if args.incident_cmd == "rotate-signing-key":
        with _registry_access(settings):
            return _rotate(args, registry_from_env(), settings.key_dir, configured_trust(settings.key_dir),
                           audit_path, by)
    with _registry_access(settings):
        reg = registry_from_env()
        trust, engine = configured_trust(settings.key_dir), configured_engine(settings)

        def promote_kwargs(stage: str) -> dict[str, Any]:
            env = reg.environment_for(stage)
            return dict(trust=trust, engine=engine, environment=env, signer=configured_signer(settings, env),
                        author=by, audit=audit_sinks(settings))

        moves = revoke_model(reg, args.name, args.version, args.reason, by,
                             configured_signer(settings, settings.environment), promote_kwargs)
    record(audit_path, "revoke-model", model=args.name, version=args.version, reason=args.reason, by=by,
           moves=[m.__dict__ for m in moves])
    print(f"revoked {args.name} {args.version}")
    for m in moves:
        print(f"  {m.stage}: {'-> ' + m.to if m.to else 'no earlier version'} "
              f"{'allowed' if m.allowed else 'DENIED: ' + '; '.join(m.reasons)}")
    return 0 if all(m.allowed for m in moves) else 1


def _rotate(args: Any, reg: Any, key_dir: Path, old: Any, audit_path: Path, by: str) -> int:
    from mlsec.incident import rotate

    until = args.old_key_valid_until or datetime.now(timezone.utc).date() + timedelta(days=30)
    stages = tuple(args.stage or rotate.SERVED_STAGES)
    r = rotate.rotate(reg, key_dir, old, until, audit_path, by, stages)
    print(f"signing key rotated: {r.old} -> {r.new}; the old key verifies only until {until.isoformat()} "
          "and never signs again")
    for v in r.versions:
        print(f"  {v.model} {v.version} ({', '.join(v.stages)}): {v.status} {v.detail}")
    print(f"new key in {key_dir} (private key 0600, never printed); trust file {key_dir / 'signing-trust.json'}.\n"
          "In a cluster: update Secret mlsec-signing-key (signing.key) for the sign task, Secret mlsec-signing-pub "
          "(signing.pub) for the gates, registry and server, and ConfigMap mlsec-signing-trust in the pipeline's "
          f"namespace (kubectl create configmap mlsec-signing-trust --from-file={key_dir / 'signing-trust.json'} "
          f"--from-file={key_dir}/retired-<fingerprint>.pub for each retired key) so pipeline tasks honour the old "
          "key's window (the server verifies with the active key alone: what was re-signed loads); and add "
          f"{r.new} to signing.allowed_signers in each environment's policy data.")
    if r.refused:
        print(f"REFUSED {len(r.refused)} version(s) that do not verify with the old key: not re-signed; revoke "
              "them (mlsec incident revoke-model) and find how they were changed", file=sys.stderr)
    return 1 if r.refused else 0
