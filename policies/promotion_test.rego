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
		"evidence_verified": true, "cache_mismatches": [],
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

bob_key := "sha256:b0b0000000000000000000000000000000000000000000000000000000000000"

carol_key := "sha256:ca70000000000000000000000000000000000000000000000000000000000000"

mallory_key := "sha256:4a11000000000000000000000000000000000000000000000000000000000000"

approvers := {"bob@example.com": [bob_key], "Carol@Example.com": [carol_key], "mallory@example.com": [mallory_key]}

bob := {"identity": "bob@example.com", "key": bob_key}

carol := {"identity": "carol@example.com", "key": carol_key}

# Every environment trusts the test signer and lists the test approvers for every stage, so signer and
# approval rules are tested on their own; the earlier decisions were taken in the environment under test.
decide(ev, env, decisions) := d if {
	stages := {s: {"approvers": approvers} | some s in ["dev", "staging", "prod"]}
	patched := object.union(data.data, {env: {"signing": {"allowed_signers": [signer]}, "promotion": {"stages": stages}}})
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
	decide(object.union(good, {"target_stage": "staging", "current_stages": ["dev"]}), "staging", earlier).allow
}

# Stage and environment are bound: dev's policy (one approval for prod) never judges a prod promotion.
test_stage_judged_under_another_environment_denied if {
	ev := object.union(good, {"target_stage": "prod", "current_stages": ["staging"], "approvals": [bob, carol]})
	some msg in decide(ev, "dev", earlier).deny
	msg == "stage prod is not governed by the dev environment (governed by: prod); promote under its own environment"
}

test_stage_no_environment_governs_denied if {
	patched := object.union(data.data, {"staging": {"promotion": {"governs": []}}})
	ev := object.union(good, {"target_stage": "staging", "current_stages": ["dev"]})
	d := gate.decision with input as {"environment": "staging", "evidence": ev, "decisions": earlier} with data.data as patched
	"stage staging is not governed by the staging environment (governed by: none); promote under its own environment" in d.deny
}

test_manifest_disagreeing_with_signed_records_denied_naming_field if {
	denied(object.union(good, {"registry": {"cache_mismatches": ["metrics", "signer"]}}), `registry manifest field "metrics" of version 072d48ebb4b5068b disagrees`)
	denied(object.union(good, {"registry": {"cache_mismatches": ["metrics", "signer"]}}), `registry manifest field "signer"`)
}

test_unverified_training_evidence_denied if {
	denied(object.union(good, {"registry": {"evidence_verified": false}}), "the training evidence of version 072d48ebb4b5068b is not the one a signed training decision judged")
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
	ev := object.union(good, {"target_stage": "prod", "current_stages": ["staging"], "approvals": [bob, carol], "metrics": {"accuracy": 0.81}})
	some msg in decide(ev, "prod", earlier).deny
	contains(msg, "accuracy 0.81 below prod-stage minimum 0.85")
}

test_prod_auc_bar if {
	ev := object.union(good, {"target_stage": "prod", "current_stages": ["staging"], "approvals": [bob, carol], "metrics": {"auc": 0.81}})
	some msg in decide(ev, "prod", earlier).deny
	contains(msg, "AUC 0.81 below prod-stage minimum 0.85")
}

prod_with(approvals, author) := decide(object.union(good, {"target_stage": "prod", "current_stages": ["staging"], "approvals": approvals, "author": author}), "prod", earlier)

test_prod_needs_independent_approvals if {
	"prod needs 2 signed approvals from its approvers other than the promoter \"bob@example.com\", has 1" in prod_with([bob, carol], "bob@example.com").deny
}

test_prod_with_two_independent_approvals_allowed if {
	prod_with([bob, carol], "alice").allow
}

# One person approving twice, or under another spelling, is one approval.
test_same_person_twice_counts_once if {
	bob_again := {"identity": "BOB@example.com ", "key": bob_key}
	"prod needs 2 signed approvals from its approvers other than the promoter \"alice\", has 1" in prod_with([bob, bob_again], "alice").deny
}

# The promoter cannot approve their own promotion, whatever the case of their name.
test_promoter_cannot_approve_under_another_case if {
	mallory := {"identity": "mallory@example.com", "key": mallory_key}
	not prod_with([bob, mallory], "MALLORY@example.com").allow
	prod_with([bob, mallory], "alice").allow
}

# An approval counts only when its key is the one policy data lists for that person.
test_approval_with_unlisted_key_does_not_count if {
	forged := {"identity": "carol@example.com", "key": mallory_key}
	not prod_with([bob, forged], "alice").allow
}

test_approval_from_unlisted_person_does_not_count if {
	stranger := {"identity": "eve@example.com", "key": bob_key}
	not prod_with([bob, stranger], "alice").allow
}

test_staging_approval_boundary if {
	ev := object.union(good, {"target_stage": "staging", "current_stages": ["dev"], "approvals": [bob]})
	patched := object.union(data.data, {"staging": {"signing": {"allowed_signers": [signer]}, "promotion": {"stages": {"staging": {"approvers": approvers, "min_approvals": 1}}}}})
	d := gate.decision with input as {"environment": "staging", "evidence": ev, "decisions": [object.union(x, {"environment": "staging"}) | some x in earlier]} with data.data as patched
	d.allow
	d0 := gate.decision with input as {"environment": "staging", "evidence": object.union(ev, {"approvals": []}), "decisions": [object.union(x, {"environment": "staging"}) | some x in earlier]} with data.data as patched
	not d0.allow
}

test_stage_skip_denied if {
	some msg in decide(object.union(good, {"target_stage": "prod", "approvals": [bob, carol]}), "prod", earlier).deny
	contains(msg, "cannot promote to prod: version is not in staging")
}

test_stage_skip_allowed_by_policy_flag_with_warning if {
	ev := object.union(good, {"target_stage": "staging"})
	patched := object.union(data.data, {"staging": {"promotion": {"allow_stage_skip": true}, "signing": {"allowed_signers": [signer]}}})
	here := [object.union(x, {"environment": "staging"}) | some x in earlier]
	d := gate.decision with input as {"environment": "staging", "evidence": ev, "decisions": here} with data.data as patched
	d.allow
	"staging allows skipping stages" in d.warn
}

test_rollback_to_a_version_the_stage_ran_is_allowed_with_warning if {
	ev := object.union(good, {"target_stage": "prod", "approvals": [bob, carol], "rollback": true, "held_stage_before": true})
	d := decide(ev, "prod", earlier)
	d.allow
	"rollback of prod to version 072d48ebb4b5068b" in d.warn
}

test_rollback_to_a_version_the_stage_never_ran_is_denied if {
	ev := object.union(good, {"target_stage": "prod", "approvals": [bob, carol], "rollback": true})
	some msg in decide(ev, "prod", earlier).deny
	contains(msg, "cannot roll prod back to version 072d48ebb4b5068b")
}

test_rollback_still_needs_approvals_and_verification if {
	ev := object.union(good, {"target_stage": "prod", "rollback": true, "held_stage_before": true, "registry": {"revoked": true}})
	d := decide(ev, "prod", earlier)
	some m1 in d.deny
	contains(m1, "needs 2 signed approvals")
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

# Metric bars at their boundary: exactly the stage minimum passes, just below it is denied.
prod_metrics(metrics) := decide(object.union(good, {"target_stage": "prod", "current_stages": ["staging"], "approvals": [bob, carol], "metrics": metrics}), "prod", earlier)

test_prod_metric_bars_at_the_boundary if {
	bar := data.data.prod.promotion.stages.prod
	prod_metrics({"accuracy": bar.min_accuracy, "auc": bar.min_auc}).allow
	not prod_metrics({"accuracy": bar.min_accuracy - 0.001, "auc": bar.min_auc}).allow
	not prod_metrics({"accuracy": bar.min_accuracy, "auc": bar.min_auc - 0.001}).allow
}

# The trust-any-signer toggle in the signing section: on, an unlisted signer may be promoted; off, not.
signer_toggle(on) := d if {
	d := gate.decision with input as {"environment": "dev", "evidence": good, "decisions": earlier}
		with data.data as object.union(data.data, {"dev": {"signing": {"trust_any_signer": on, "allowed_signers": []}}})
}

test_trust_any_signer_toggle_on_and_off if {
	signer_toggle(true).allow
	some msg in signer_toggle(false).deny
	contains(msg, "is not on the dev allow list")
}

# An environment without promotion policy gets that one reason, not a cascade from rules that read it.
test_unknown_environment_gets_one_reason if {
	d := gate.decision with input as {"environment": "nope", "evidence": good, "decisions": earlier}
	d.deny == {`no promotion policy for environment "nope"`}
}
