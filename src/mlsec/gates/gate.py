"""evidence -> decision. Fails closed: whatever cannot be judged is a deny with the reason why."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from mlsec.digest import canonical_json, canonical_json_object, sha256_bytes
from mlsec.evidence import Evidence
from mlsec.gates.audit import AuditSink
from mlsec.gates.decision import Decision
from mlsec.gates.engine import InProcessEngine, PolicyEngine, PolicyError, PolicyInput
from mlsec.ingest.evidence import DataEvidence
from mlsec.registry.evidence import PromotionEvidence
from mlsec.serve.evidence import DeploymentEvidence
from mlsec.sign.evidence import SigningEvidence
from mlsec.train.evidence import TrainingEvidence

GATES: dict[str, type[Evidence]] = {
    "data": DataEvidence,
    "training": TrainingEvidence,
    "signing": SigningEvidence,
    "promotion": PromotionEvidence,
    "deployment": DeploymentEvidence,
}


def _field_errors(err: ValidationError) -> list[str]:
    return [
        f"evidence field '{'.'.join(str(p) for p in e['loc']) or '<root>'}': {e['msg']}"
        for e in err.errors()
    ]


def _check_result(raw: Any) -> tuple[bool, list[str], list[str]]:
    """The Rego decision must have exactly the promised shape; anything else is an engine fault."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("allow"), bool):
        raise PolicyError(f"policy returned a malformed decision: {json.dumps(raw)[:200]}")
    deny, warn = raw.get("deny", []), raw.get("warn", [])
    if not (isinstance(deny, list) and isinstance(warn, list)):  # Rego sets arrive as JSON arrays
        raise PolicyError(f"policy returned deny/warn that are not sets: {json.dumps(raw)[:200]}")
    if not all(isinstance(r, str) for r in [*deny, *warn]):
        raise PolicyError("policy returned non-string reasons")
    return raw["allow"], sorted(deny), sorted(warn)


def evaluate(
    gate: str,
    evidence: Mapping[str, Any] | Evidence,
    *,
    environment: str,
    engine: PolicyEngine,
    decisions: Sequence[Decision] = (),
    audit: AuditSink | None = None,
    stage: str | None = None,
) -> Decision:
    doc = evidence.model_dump(mode="json") if isinstance(evidence, Evidence) else dict(evidence)
    subject = doc.get("subject", {}).get("digest") if isinstance(doc.get("subject"), Mapping) else None
    evidence_json = canonical_json(doc)
    base: dict[str, Any] = {
        "gate": gate,
        "environment": environment,
        "evidence_sha256": sha256_bytes(evidence_json),
        "policy_sha256": engine.policy_sha256,
        "engine": engine.name,
        "stage": stage,
    }

    def deny(reasons: list[str], subj: str | None = subject) -> Decision:
        return Decision(allow=False, deny=reasons, subject=subj, **base)

    schema = GATES.get(gate)
    if schema is None:
        decision = deny([f"unknown gate '{gate}' (known: {', '.join(GATES)})"], None)
    else:
        try:
            # An evidence object of the right type is already valid, and doc is its JSON form.
            typed = evidence if type(evidence) is schema else schema.model_validate(doc)
        except ValidationError as e:
            decision = deny(_field_errors(e), None)
        else:
            if typed is not evidence:
                doc = typed.model_dump(mode="json")
                evidence_json = canonical_json(doc)
            facts = [d.policy_input() for d in decisions]
            policy_input = PolicyInput(
                {"decisions": facts, "environment": environment, "evidence": doc},
                canonical_json_object({"decisions": canonical_json(facts), "environment": canonical_json(environment),
                                       "evidence": evidence_json}),
            )
            try:
                allow, reasons, warnings = _check_result(engine.decide(gate, policy_input))
            except PolicyError as e:
                decision = deny([str(e)], typed.subject.digest)
            else:
                # A reason without allow=false, or allow without reasons, is not trusted: deny wins.
                if allow and reasons:
                    allow = False
                if not allow and not reasons:
                    reasons = ["policy denied without giving a reason"]
                decision = Decision(
                    allow=allow, deny=reasons, warn=warnings, subject=typed.subject.digest, **base
                )
    if audit is not None:
        audit.append(decision)
    return decision


def policy_problems(engine: InProcessEngine) -> list[str]:
    """What makes a gate deny every run, found before any run: a gate without a policy, or with one that
    does not deny an empty evidence document on its own (it must fail closed without the schema check
    in front of it, e.g. when queried over HTTP); an environment whose policy data lacks a gate's section
    or a key a gate reads, or has it with the wrong type. Otherwise these show only as denies when a run
    reaches that gate in that environment."""
    from opa_bindings import OpaUndefinedError

    (bindings,) = engine.opa.eval_query("sections := {env: object.keys(v) | some env, v in data.data}")
    sections: dict[str, list[str]] = bindings["sections"]
    problems: list[str] = []
    for gate in GATES:
        for env in sorted(sections):
            empty = {"environment": env, "evidence": {}, "decisions": []}
            try:
                decision = engine.opa.eval_document(f"mlsec.gates.{gate}.decision", empty)
            except OpaUndefinedError:
                problems.append(f"no policy for the {gate} gate: data.mlsec.gates.{gate}.decision is undefined")
                break
            if not isinstance(decision, dict) or decision.get("allow") is not False:
                problems.append(f"the {gate} policy does not deny an empty evidence document in {env}")
            if gate not in sections[env]:
                problems.append(f"policies/data/{env}.json has no {gate!r} section: every {gate} gate in {env} denies")
                continue
            try:
                problems += sorted(engine.opa.eval_document(f"mlsec.gates.{gate}.config_problems", {"environment": env}))
            except OpaUndefinedError:
                problems.append(f"the {gate} policy defines no config_problems (policies/lib/config.rego): "
                                f"a misspelt key in its policy data would switch a check off unnoticed")
                break
    return problems
