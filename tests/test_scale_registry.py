"""The registry's flat-cost lookups (issue 17) are correct and stay as strict as the full reads: the head
of a stage is found by key from the alias, checked against the signed record there and against every
object version sorting after it. Request counts, never times, show the cost stays flat."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mlsec.gates.decision import Decision
from mlsec.gates.engine import InProcessEngine
from mlsec.registry.seaweed import LocalS3
from mlsec.registry.store import Registry, RegistryError, policy_history
from mlsec.sign import keys

from conftest import GateKeys, Signed, _authenticated
from registry_support import promote


@pytest.fixture
def attacker(s3_server: LocalS3) -> Any:
    return _authenticated(s3_server, role="pipeline")


def _requests(registry: Registry, fn: Any) -> Counter[str]:
    calls: Counter[str] = Counter()

    def count(event_name: str, **_: Any) -> None:
        calls[event_name.rsplit(".", 1)[-1]] += 1

    registry.s3.meta.events.register("before-call.s3", count)
    try:
        fn()
    finally:
        registry.s3.meta.events.unregister("before-call.s3", count)
    return calls


def _promotion_keys(registry: Registry) -> list[str]:
    got = registry.s3.list_object_versions(Bucket=registry.bucket, Prefix="promotions/credit/dev/")
    return sorted({v["Key"] for v in got.get("Versions", [])})


def test_head_costs_the_same_requests_after_more_promotions(registry: Registry, signed: Signed,
                                                            key_pair: keys.KeyPair, engine: InProcessEngine,
                                                            gate_keys: GateKeys) -> None:
    version = signed.register(registry, key_pair)
    assert promote(registry, version, "dev", key_pair, engine, gate_keys).allow
    few = _requests(registry, lambda: registry.head("credit", "dev"))
    for _ in range(3):
        assert promote(registry, version, "dev", key_pair, engine, gate_keys).allow
    many = _requests(registry, lambda: registry.head("credit", "dev"))
    assert few == many and many["GetObject"] <= 3
    assert registry.head("credit", "dev") == registry.promotions("credit", "dev")[-1]
    assert len(_promotion_keys(registry)) == 4
    # The full read agrees; the rollback fact comes from the version's own signed records, by key.
    v = registry.verify_version("credit", version, key_pair.public_key)
    assert registry.held_before("credit", "dev", v) and not registry.held_before("credit", "staging", v)


def test_replayed_alias_is_refused_even_when_the_newer_promotion_is_hidden(
        tmp_path: Path, registry: Registry, attacker: Any, signed: Signed, key_pair: keys.KeyPair,
        engine: InProcessEngine, gate_keys: GateKeys) -> None:
    version = signed.register(registry, key_pair)
    assert promote(registry, version, "dev", key_pair, engine, gate_keys).allow
    old_alias = attacker.get_object(Bucket=registry.bucket, Key="aliases/credit/dev.json")["Body"].read()
    first = _promotion_keys(registry)[0]
    old_body = attacker.get_object(Bucket=registry.bucket, Key=first)["Body"].read()
    newer = promote(registry, version, "dev", key_pair, engine, gate_keys)
    (_, newest_key) = _promotion_keys(registry)
    # Hide the newer record: a delete marker and a junk object on top; copy the old one after every key.
    attacker.delete_object(Bucket=registry.bucket, Key=newest_key)
    attacker.put_object(Bucket=registry.bucket, Key=newest_key, Body=b"junk")
    attacker.put_object(Bucket=registry.bucket, Key="promotions/credit/dev/99991231T235959999999Z-" + "f" * 32
                        + ".dsse.json", Body=old_body)
    attacker.put_object(Bucket=registry.bucket, Key="aliases/credit/dev.json", Body=old_alias)
    with pytest.raises(RegistryError, match="rewritten or replayed"):
        registry.pull("credit", "dev", tmp_path / "p", key_pair.public_key)
    with pytest.raises(RegistryError, match="rewritten or replayed"):
        registry.head("credit", "dev")
    # With the alias back on the newest promotion, the copied old record changes nothing.
    fixed = attacker.get_object(Bucket=registry.bucket, Key="aliases/credit/dev.json",
                                VersionId=attacker.list_object_versions(Bucket=registry.bucket,
                                                                        Prefix="aliases/credit/dev.json")
                                ["Versions"][1]["VersionId"])["Body"].read()
    attacker.put_object(Bucket=registry.bucket, Key="aliases/credit/dev.json", Body=fixed)
    head = registry.head("credit", "dev")
    assert head is not None and head.decision.id == newer.id


def test_alias_pointing_at_a_key_without_its_record_falls_back_to_the_full_read(
        registry: Registry, attacker: Any, signed: Signed, key_pair: keys.KeyPair, engine: InProcessEngine,
        gate_keys: GateKeys) -> None:
    import json

    version = signed.register(registry, key_pair)
    d = promote(registry, version, "dev", key_pair, engine, gate_keys)
    alias = json.loads(attacker.get_object(Bucket=registry.bucket, Key="aliases/credit/dev.json")["Body"].read())
    attacker.put_object(Bucket=registry.bucket, Key="aliases/credit/dev.json",
                        Body=json.dumps({**alias, "decision_time": "2001-01-01T00:00:00+00:00"}).encode())
    head = registry.head("credit", "dev")
    assert head is not None and head.decision.id == d.id


def _d(gate: str, allow: bool = True, subject: str = "a" * 64) -> Decision:
    return Decision(gate=gate, environment="dev", allow=allow, deny=[] if allow else ["no"], subject=subject,
                    evidence_sha256=None, policy_sha256="p", engine="e")


def test_policy_history_passes_each_fact_once_and_keeps_every_distinct_one() -> None:
    history = [_d("data"), *(_d("promotion") for _ in range(50)), _d("promotion", allow=False),
               _d("training", subject="b" * 64)]
    facts = [d.policy_input() for d in policy_history(history)]
    assert len(facts) == 4
    assert {tuple(f.values()) for f in facts} == {tuple(d.policy_input().values()) for d in history}
