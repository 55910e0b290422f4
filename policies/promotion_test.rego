package mlsec.gates.promotion_test

import data.mlsec.gates.promotion as gate

model := "072d48ebb4b5068b04063ff8aa5d079924371519871b313d0e9947f4d0085bed"

dataset := "d0378d3f5b3c89ad6b648593024747f712f529fcc1ef43846784547cdf2499d6"

signer := "sha256:66612b4659f70c358d504083d6b8753e7dbaa3d6c3195aa5b865501ee91d2511"

good := {
	"kind": "mlsec.evidence.promotion/v1",
	"subject": {"name": "credit", "digest": model},
	"target_stage": "dev",
	"current_stages": [],
	"dataset_digest": dataset,
	"metrics": {"accuracy": 0.95, "auc": 0.95, "holdout_rows": 1000},
	"registry": {
		"version": "072d48ebb4b5068b", "files_verified": true, "signature_verified": true,
		"attestation_verified": true, "signer": signer, "revoked": false,
	},
	"author": "alice",
	"approvals": [],
	"rollback": false,
	"held_stage_before": false,
}

earlier := [
	{"gate": "data", "environment": "dev", "allow": true, "subject": dataset},
	{"gate": "training", "environment": "dev", "allow": true, "subject": model},
	{"gate": "signing", "environment": "dev", "allow": true, "subject": model},
]

# Every environment trusts the test signer, so signer rules are tested on their own; the earlier
# decisions were taken in the environment under test.
decide(ev, env, decisions) := d if {
	patched := object.union(data.data, {env: {"signing": {"allowed_signers": [signer]}}})
	here := [object.union(x, {"environment": env}) | some x in decisions]
	d := gate.decision with input as {"environment": env, "evidence": ev, "decisions": here}
		with data.data as patched
}

denied(ev, fragment) if {
	some msg in decide(ev, "dev", earlier).deny
	contains(msg, fragment)
}

test_first_stage_allowed if {
	d := decide(good, "dev", earlier)
	d.allow
	count(d.warn) == 0
}

test_next_stage_allowed_when_previous_holds_version if {
	decide(object.union(good, {"target_stage": "staging", "current_stages": ["dev"]}), "dev", earlier).allow
}

test_wrong_evidence_kind_denied if denied(object.union(good, {"kind": "x"}), "evidence kind")

test_unknown_environment_denied if {
	d := gate.decision with input as {"environment": "nope", "evidence": good, "decisions": earlier}
	some msg in d.deny
	contains(msg, "no promotion policy for environment")
}

test_unknown_stage_denied if denied(object.union(good, {"target_stage": "qa"}), `unknown stage "qa"`)

test_revoked_version_denied if denied(object.union(good, {"registry": {"revoked": true}}), "version 072d48ebb4b5068b is revoked")

test_registry_copy_must_verify if {
	denied(object.union(good, {"registry": {"signature_verified": false}}), "failed signature_verified")
}

test_unlisted_signer_denied_in_staging if {
	d := gate.decision with input as {"environment": "staging", "evidence": good, "decisions": earlier}
	some msg in d.deny
	contains(msg, "is not on the staging allow list")
}

test_missing_gate_decision_denied if {
	some msg in decide(good, "dev", [earlier[0], earlier[1]]).deny
	contains(msg, "no allowing signing-gate decision")
}

test_decision_for_other_model_denied if {
	other := [earlier[0], earlier[1], {"gate": "signing", "environment": "dev", "allow": true, "subject": "other"}]
	some msg in decide(good, "dev", other).deny
	contains(msg, "no allowing signing-gate decision")
}

test_denied_decision_does_not_count if {
	denying := [earlier[0], {"gate": "training", "environment": "dev", "allow": false, "subject": model}, earlier[2]]
	some msg in decide(good, "dev", denying).deny
	contains(msg, "no allowing training-gate decision")
}

test_data_decision_must_match_dataset if {
	wrong := [{"gate": "data", "environment": "dev", "allow": true, "subject": model}, earlier[1], earlier[2]]
	some msg in decide(good, "dev", wrong).deny
	contains(msg, "no allowing data-gate decision")
}

test_prod_accuracy_bar if {
	ev := object.union(good, {"target_stage": "prod", "current_stages": ["staging"], "approvals": ["bob", "carol"], "metrics": {"accuracy": 0.81}})
	some msg in decide(ev, "prod", earlier).deny
	contains(msg, "accuracy 0.810 below prod-stage minimum")
}

test_prod_auc_bar if {
	ev := object.union(good, {"target_stage": "prod", "current_stages": ["staging"], "approvals": ["bob", "carol"], "metrics": {"auc": 0.81}})
	some msg in decide(ev, "prod", earlier).deny
	contains(msg, "AUC 0.810 below prod-stage minimum")
}

test_prod_needs_independent_approvals if {
	ev := object.union(good, {"target_stage": "prod", "current_stages": ["staging"], "approvals": ["alice", "bob"]})
	some msg in decide(ev, "prod", earlier).deny
	contains(msg, `prod needs 2 approvals from people other than the author "alice", has 1`)
}

test_prod_with_two_independent_approvals_allowed if {
	ev := object.union(good, {"target_stage": "prod", "current_stages": ["staging"], "approvals": ["bob", "carol"]})
	decide(ev, "prod", earlier).allow
}

test_stage_skip_denied if {
	denied(object.union(good, {"target_stage": "prod", "approvals": ["bob"]}), "cannot promote to prod: version is not in staging")
}

test_stage_skip_allowed_by_policy_flag_with_warning if {
	ev := object.union(good, {"target_stage": "staging"})
	patched := object.union(data.data, {"dev": {"promotion": {"allow_stage_skip": true}, "signing": {"allowed_signers": [signer]}}})
	d := gate.decision with input as {"environment": "dev", "evidence": ev, "decisions": earlier} with data.data as patched
	d.allow
	"dev allows skipping stages" in d.warn
}

test_rollback_to_a_version_the_stage_ran_is_allowed_with_warning if {
	ev := object.union(good, {"target_stage": "prod", "approvals": ["bob", "carol"], "rollback": true, "held_stage_before": true})
	d := decide(ev, "prod", earlier)
	d.allow
	"rollback of prod to version 072d48ebb4b5068b" in d.warn
}

test_rollback_to_a_version_the_stage_never_ran_is_denied if {
	ev := object.union(good, {"target_stage": "prod", "approvals": ["bob", "carol"], "rollback": true})
	some msg in decide(ev, "prod", earlier).deny
	contains(msg, "cannot roll prod back to version 072d48ebb4b5068b")
}

test_rollback_still_needs_approvals_and_verification if {
	ev := object.union(good, {"target_stage": "prod", "rollback": true, "held_stage_before": true, "registry": {"revoked": true}})
	d := decide(ev, "prod", earlier)
	some m1 in d.deny
	contains(m1, "needs 2 approvals")
	some m2 in d.deny
	contains(m2, "is revoked")
}

test_stage_data_checked_for_every_stage if {
	patched := object.union(data.data, {"dev": {"promotion": {"stages": {"prod": {"min_approvals": "2"}}}, "signing": {"allowed_signers": [signer]}}})
	d := gate.decision with input as {"environment": "dev", "evidence": good, "decisions": earlier} with data.data as patched
	"policy data dev.promotion.stages.prod.min_approvals: expected number, found string" in d.deny
}

test_promotion_checks_the_signing_data_it_reads if {
	patched := object.union(data.data, {"dev": {"signing": {"allowed_signers": null}}})
	d := gate.decision with input as {"environment": "dev", "evidence": good, "decisions": earlier} with data.data as patched
	"policy data dev.signing.allowed_signers is missing" in d.deny
}

test_mistyped_stage_flag_denied if {
	patched := object.union(data.data, {"dev": {"promotion": {"allow_stage_skip": "no"}, "signing": {"allowed_signers": [signer]}}})
	d := gate.decision with input as {"environment": "dev", "evidence": good, "decisions": earlier} with data.data as patched
	not d.allow
	"policy data dev.promotion.allow_stage_skip: expected boolean, found string" in d.deny
}

# A model that passed dev's gates is not a prod model: prod's own thresholds and allow lists never ran.
test_decisions_under_another_environment_denied if {
	patched := object.union(data.data, {"prod": {"signing": {"allowed_signers": [signer]}}})
	d := gate.decision with input as {"environment": "prod", "evidence": good, "decisions": earlier}
		with data.data as patched
	some msg in d.deny
	contains(msg, "the training-gate decision for 072d48ebb4b5068b04063ff8aa5d079924371519871b313d0e9947f4d0085bed was taken under the dev policy, not prod")
}
