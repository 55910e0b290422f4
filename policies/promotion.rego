# Promotion gate: a stage alias may point at a version only if the registry's own copy verified,
# every earlier gate allowed this exact model, the stage's bar is met and no stage is skipped.
package mlsec.gates.promotion

import data.mlsec.lib.config
import data.mlsec.lib.decisions

cfg := data.data[input.environment].promotion

signing_cfg := data.data[input.environment].signing

ev := input.evidence

stage := cfg.stages[ev.target_stage]

# Every key this policy reads from its data, with its type (see lib/config.rego).
config_types := {"stage_order": "array", "required_gates": "array", "allow_stage_skip": "boolean", "stages": "object", "governs": "array"}

stage_types := {"min_accuracy": "number", "min_auc": "number", "min_approvals": "number", "approvers": "object"}

signing_types := {"trust_any_signer": "boolean", "allowed_signers": "array"}

config_problems contains msg if {
	some msg in config.problems([input.environment, "promotion"], cfg, config_types)
}

# The signer allow list is the signing section's; this gate reads it too, so it checks it too (even
# when the whole section is missing, which signing_cfg alone would leave undefined and unreported).
config_problems contains msg if {
	cfg
	signing := object.get(data.data, [input.environment, "signing"], {})
	some msg in config.problems([input.environment, "signing"], signing, signing_types)
}

config_problems contains msg if {
	some s in cfg.stage_order
	some msg in config.problems([input.environment, "promotion", "stages", s], object.get(cfg.stages, s, {}), stage_types)
}

deny contains msg if {
	not ev.kind == "mlsec.evidence.promotion/v1"
	msg := sprintf("evidence kind %v is not mlsec.evidence.promotion/v1", [object.get(input, ["evidence", "kind"], null)])
}

deny contains msg if {
	not cfg
	msg := sprintf("no promotion policy for environment %q", [input.environment])
}

deny contains msg if {
	some msg in config_problems
}

deny contains msg if {
	cfg
	not stage
	msg := sprintf("unknown stage %q (stages: %s)", [ev.target_stage, concat(", ", cfg.stage_order)])
}

# A stage is judged by the environment that governs it (promotion.governs), never by a laxer one.
deny contains msg if {
	cfg
	not ev.target_stage in cfg.governs
	msg := sprintf("stage %s is not governed by the %s environment (governed by: %s); promote under its own environment", [ev.target_stage, input.environment, concat(", ", governing_envs)])
}

governing_envs contains env if {
	some env, sections in data.data
	ev.target_stage in object.get(sections, ["promotion", "governs"], [])
}

governing_envs contains "none" if {
	not any_governs
}

any_governs if {
	some sections in data.data
	ev.target_stage in object.get(sections, ["promotion", "governs"], [])
}

deny contains msg if {
	ev.registry.revoked
	msg := sprintf("version %s is revoked", [ev.registry.version])
}

deny contains msg if {
	some check in ["files_verified", "signature_verified", "attestation_verified"]
	not ev.registry[check]
	msg := sprintf("registry copy of version %s failed %s", [ev.registry.version, check])
}

# The manifest is a cache anyone with write access can replace; the signed records decide.
deny contains msg if {
	some field in ev.registry.cache_mismatches
	msg := sprintf("registry manifest field %q of version %s disagrees with the signed records", [field, ev.registry.version])
}

deny contains msg if {
	not ev.registry.evidence_verified
	msg := sprintf("the training evidence of version %s is not the one a signed training decision judged", [ev.registry.version])
}

deny contains msg if {
	not signing_cfg.trust_any_signer
	not ev.registry.signer in signing_cfg.allowed_signers
	msg := sprintf("signer %s is not on the %s allow list (policies/data/%s.json: signing.allowed_signers)", [ev.registry.signer, input.environment, input.environment])
}

deny contains msg if {
	some gate in cfg.required_gates
	not decisions.allowed(gate, expected_subject(gate))
	msg := decisions.missing(gate, expected_subject(gate))
}

deny contains msg if {
	ev.metrics.accuracy < stage.min_accuracy
	msg := sprintf("accuracy %v below %s-stage minimum %v", [r3(ev.metrics.accuracy), ev.target_stage, r3(stage.min_accuracy)])
}

deny contains msg if {
	ev.metrics.auc < stage.min_auc
	msg := sprintf("AUC %v below %s-stage minimum %v", [r3(ev.metrics.auc), ev.target_stage, r3(stage.min_auc)])
}

deny contains msg if {
	count(independent_approvals) < stage.min_approvals
	msg := sprintf("%s needs %v signed approvals from its approvers other than the promoter %q, has %v", [ev.target_stage, stage.min_approvals, ev.author, count(independent_approvals)])
}

deny contains msg if {
	not cfg.allow_stage_skip
	not ev.rollback
	some i, s in cfg.stage_order
	s == ev.target_stage
	i > 0
	not cfg.stage_order[i - 1] in ev.current_stages
	msg := sprintf("cannot promote to %s: version is not in %s (stages may not be skipped)", [ev.target_stage, cfg.stage_order[i - 1]])
}

# A rollback skips the stage order, but only back to a version this stage already ran.
deny contains msg if {
	ev.rollback
	not ev.held_stage_before
	msg := sprintf("cannot roll %s back to version %s: that stage never pointed at it", [ev.target_stage, ev.registry.version])
}

expected_subject("data") := ev.dataset_digest

expected_subject(gate) := ev.subject.digest if gate != "data"

# An approval counts once per person, only when signed by a key policy data lists for that person on this
# stage, and never from the promoter. Identities arrive normalised (NFKC, case-folded); lower() again here
# so a policy file's spelling of a name cannot open a gap.
independent_approvals := {id |
	some a in ev.approvals
	id := lower(trim_space(a.identity))
	some approver, keys in object.get(stage, "approvers", {})
	lower(trim_space(approver)) == id
	a.key in keys
	id != lower(trim_space(ev.author))
}

warn contains msg if {
	ev.rollback
	msg := sprintf("rollback of %s to version %s", [ev.target_stage, ev.registry.version])
}

warn contains msg if {
	cfg.allow_stage_skip
	msg := sprintf("%s allows skipping stages", [input.environment])
}

decision := {"allow": count(deny) == 0, "deny": deny, "warn": warn}

# Numbers in reasons: three decimals at most, rendered with %v so an integral value (0, 1) prints too.
r3(x) := round(x * 1000) / 1000
