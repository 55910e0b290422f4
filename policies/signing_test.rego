package mlsec.gates.signing_test

import data.mlsec.gates.signing as gate

digest := "072d48ebb4b5068b04063ff8aa5d079924371519871b313d0e9947f4d0085bed"

signer := "sha256:66612b4659f70c358d504083d6b8753e7dbaa3d6c3195aa5b865501ee91d2511"

good := {
	"kind": "mlsec.evidence.signing/v1",
	"subject": {"name": "credit", "digest": digest},
	"files": ["config.json", "model.safetensors"],
	"formats": {"config.json": "json", "model.safetensors": "safetensors"},
	"signature": {"method": "key", "verified": true, "signer": signer, "signed_digest": digest},
	"attestation": {"verified": true, "subject_digest": digest, "dataset_digest": "aa", "decision_digests": ["d1", "d2"]},
	"dataset_provenance": {
		"present": true, "verified": true, "document_digest": "dd", "dataset_digest": "aa", "source_digest": "ss",
		"matches_dataset": true, "problem": null,
	},
}

two_decisions := [
	{"gate": "data", "environment": "dev", "allow": true, "subject": "aa"},
	{"gate": "training", "environment": "dev", "allow": true, "subject": digest},
]

# The earlier decisions were taken in the environment under test.
decide(ev, env, allowed) := d if {
	patched := object.union(data.data, {env: {"signing": {"allowed_signers": allowed}}})
	here := [object.union(x, {"environment": env}) | some x in two_decisions]
	d := gate.decision with input as {"environment": env, "evidence": ev, "decisions": here}
		with data.data as patched
}

denied(ev, fragment) if {
	some msg in decide(ev, "dev", []).deny
	contains(msg, fragment)
}

test_good_signature_allowed_in_dev_with_warning if {
	d := decide(good, "dev", [])
	d.allow
	some w in d.warn
	contains(w, "accepted only because dev trusts any signer")
}

test_allow_listed_signer_allowed_in_prod if {
	d := decide(good, "prod", [signer])
	d.allow
	count(d.warn) == 0
}

test_unlisted_signer_denied_in_prod if {
	some msg in decide(good, "prod", ["sha256:someone-else"]).deny
	contains(msg, "is not on the prod allow list")
}

test_wrong_evidence_kind_denied if denied(object.union(good, {"kind": "x"}), "evidence kind")

test_unknown_environment_denied if {
	d := gate.decision with input as {"environment": "nope", "evidence": good, "decisions": two_decisions}
	some msg in d.deny
	contains(msg, "no signing policy for environment")
}

test_unverified_signature_denied if denied(object.union(good, {"signature": {"verified": false}}), "model signature did not verify")

test_signature_for_other_digest_denied if {
	denied(object.union(good, {"signature": {"signed_digest": "ffff"}}), "signature covers ffff, not the model digest")
}

test_pickle_file_denied if {
	denied(object.union(good, {"files": ["config.json", "model.PKL"]}), `unsafe file "model.PKL"`)
}

test_unverified_attestation_denied if {
	denied(object.union(good, {"attestation": {"verified": false}}), "provenance attestation did not verify")
}

test_attestation_for_other_model_denied if {
	denied(object.union(good, {"attestation": {"subject_digest": "eeee"}}), "attestation is about eeee")
}

test_attestation_missing_decisions_denied if {
	denied(object.union(good, {"attestation": {"decision_digests": ["d1"]}}), "attestation records 1 gate decisions but 2 were taken")
}

test_mistyped_allow_list_denied if {
	patched := object.union(data.data, {"dev": {"signing": {"allowed_signers": "sha256:abc"}}})
	d := gate.decision with input as {"environment": "dev", "evidence": good, "decisions": two_decisions}
		with data.data as patched
	"policy data dev.signing.allowed_signers: expected array, found string" in d.deny
}

test_disguised_pickle_denied if {
	ev := object.union(good, {"files": ["config.json", "model.safetensors", "weights.dat"], "formats": {"weights.dat": "pickle"}})
	denied(ev, `file "weights.dat" is pickle, not an allowed model format (safetensors, json)`)
}

test_file_without_format_check_denied if {
	denied(object.union(good, {"files": ["config.json", "model.safetensors", "extra.txt"]}), `file "extra.txt" has no format check`)
}

test_model_the_training_gate_did_not_allow_denied if {
	other := [two_decisions[0], object.union(two_decisions[1], {"subject": "ffff"})]
	d := gate.decision with input as {"environment": "dev", "evidence": good, "decisions": other}
	"no allowing training-gate decision for 072d48ebb4b5068b04063ff8aa5d079924371519871b313d0e9947f4d0085bed" in d.deny
}

test_training_decision_under_another_environment_denied if {
	d := gate.decision with input as {"environment": "staging", "evidence": good, "decisions": two_decisions}
	some msg in d.deny
	contains(msg, "training-gate decision for 072d48ebb4b5068b04063ff8aa5d079924371519871b313d0e9947f4d0085bed was taken under the dev policy, not staging")
}

# The trust-any-signer toggle: on, an unlisted signer passes with a warning naming the toggle; a listed one
# passes without it; off, the unlisted signer is denied and no warning claims it was accepted.
trusting(env, on, allowed) := d if {
	patched := object.union(data.data, {env: {"signing": {"trust_any_signer": on, "allowed_signers": allowed}}})
	here := [object.union(x, {"environment": env}) | some x in two_decisions]
	d := gate.decision with input as {"environment": env, "evidence": good, "decisions": here}
		with data.data as patched
}

test_trust_any_signer_toggle_warns_only_for_unlisted_signers if {
	on := trusting("prod", true, ["sha256:someone-else"])
	on.allow
	some w in on.warn
	contains(w, "accepted only because prod trusts any signer")
	listed := trusting("prod", true, [signer])
	listed.allow
	count(listed.warn) == 0
	off := trusting("prod", false, ["sha256:someone-else"])
	not off.allow
	count(off.warn) == 0
}

# The dataset provenance carried in the model's provenance (signing.require_dataset_provenance).
stripped := object.union(good, {"dataset_provenance": {
	"present": false, "verified": false, "document_digest": null, "dataset_digest": null, "source_digest": null,
	"matches_dataset": false, "problem": "the model's provenance carries none",
}})

requiring(ev, env, on) := d if {
	patched := object.union(data.data, {env: {"signing": {"require_dataset_provenance": on, "allowed_signers": [signer]}}})
	here := [object.union(x, {"environment": env}) | some x in two_decisions]
	d := gate.decision with input as {"environment": env, "evidence": ev, "decisions": here}
		with data.data as patched
}

test_carried_dataset_provenance_allowed_whether_required_or_not if {
	on := requiring(good, "prod", true)
	on.allow
	count(on.warn) == 0
	off := requiring(good, "prod", false)
	off.allow
	count(off.warn) == 0
}

test_missing_dataset_provenance_toggle_on_denies_off_warns if {
	on := requiring(stripped, "prod", true)
	not on.allow
	"the model's provenance carries no dataset provenance (the model's provenance carries none), which prod requires (policies/data/prod.json: signing.require_dataset_provenance)" in on.deny
	count(on.warn) == 0
	off := requiring(stripped, "prod", false)
	off.allow
	"the model's provenance carries no dataset provenance (the model's provenance carries none): accepted only because prod does not require one" in off.warn
}

test_missing_dataset_provenance_denied_in_staging_and_prod_warned_in_dev if {
	some env in ["staging", "prod"]
	here := [object.union(x, {"environment": env}) | some x in two_decisions]
	patched := object.union(data.data, {env: {"signing": {"allowed_signers": [signer]}}})
	d := gate.decision with input as {"environment": env, "evidence": stripped, "decisions": here} with data.data as patched
	some msg in d.deny
	contains(msg, sprintf("which %s requires", [env]))
	dev := decide(stripped, "dev", [])
	dev.allow
	some w in dev.warn
	contains(w, "accepted only because dev does not require one")
}

test_evidence_without_dataset_provenance_block_denied_when_required if {
	some msg in requiring(object.remove(good, ["dataset_provenance"]), "prod", true).deny
	contains(msg, "carries no dataset provenance (the evidence has no dataset_provenance)")
	some w in requiring(object.remove(good, ["dataset_provenance"]), "prod", false).warn
	contains(w, "(the evidence has no dataset_provenance): accepted only because")
}

test_unverified_dataset_provenance_denied_even_when_not_required if {
	bad := object.union(good, {"dataset_provenance": {"verified": false, "dataset_digest": null, "matches_dataset": false,
		"problem": "the dataset provenance does not verify: bad signature"}})
	d := requiring(bad, "prod", false)
	"the dataset provenance in the model's provenance did not verify: the dataset provenance does not verify: bad signature" in d.deny
	count(d.deny) == 1
}

test_dataset_provenance_for_another_dataset_denied if {
	other := object.union(good, {"dataset_provenance": {"dataset_digest": "bb", "matches_dataset": false}})
	d := requiring(other, "prod", false)
	"the dataset provenance is about dataset bb, not the dataset aa the model's provenance names" in d.deny
	"dataset provenance: no allowing data-gate decision for bb" in d.deny
}

test_dataset_the_data_gate_did_not_allow_denied if {
	# Matches the model's provenance, but no data-gate decision allowed that dataset here.
	ev := object.union(good, {
		"attestation": {"dataset_digest": "cc"},
		"dataset_provenance": {"dataset_digest": "cc"},
	})
	d := requiring(ev, "prod", false)
	d.deny == {"dataset provenance: no allowing data-gate decision for cc"}
	elsewhere := [object.union(two_decisions[0], {"environment": "dev"}), object.union(two_decisions[1], {"environment": "prod"})]
	p := gate.decision with input as {"environment": "prod", "evidence": good, "decisions": elsewhere}
		with data.data as object.union(data.data, {"prod": {"signing": {"allowed_signers": [signer]}}})
	some msg in p.deny
	contains(msg, "dataset provenance: the data-gate decision for aa was taken under the dev policy, not prod")
}

test_mistyped_dataset_provenance_toggle_denied if {
	patched := object.union(data.data, {"prod": {"signing": {"require_dataset_provenance": "yes", "allowed_signers": [signer]}}})
	here := [object.union(x, {"environment": "prod"}) | some x in two_decisions]
	d := gate.decision with input as {"environment": "prod", "evidence": good, "decisions": here} with data.data as patched
	"policy data prod.signing.require_dataset_provenance: expected boolean, found string" in d.deny
}
