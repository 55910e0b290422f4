package mlsec.gates.training_test

import data.mlsec.gates.training as gate

dataset := "d0378d3f5b3c89ad6b648593024747f712f529fcc1ef43846784547cdf2499d6"

good := {
	"kind": "mlsec.evidence.training/v1",
	"subject": {"name": "credit", "digest": "072d48ebb4b5068b04063ff8aa5d079924371519871b313d0e9947f4d0085bed"},
	"dataset_digest": dataset,
	"files": ["config.json", "model.safetensors"],
	"metrics": {"accuracy": 0.9, "auc": 0.9, "holdout_rows": 1000},
	"fairness": {"protected_attribute": "gender", "demographic_parity_difference": 0.01},
	"run": {"device": "cpu", "epochs": 30, "seed": 0, "torch_version": "2.13.0", "mlsec_version": "0.1.0", "duration_s": 3},
}

data_allowed := [{"gate": "data", "environment": "dev", "allow": true, "subject": dataset}]

# The earlier decisions were taken in the environment under test.
decide(ev, env, decisions) := d if {
	here := [object.union(x, {"environment": env}) | some x in decisions]
	d := gate.decision with input as {"environment": env, "evidence": ev, "decisions": here}
}

denied(ev, fragment) if {
	some msg in decide(ev, "dev", data_allowed).deny
	contains(msg, fragment)
}

test_good_model_allowed if {
	d := decide(good, "prod", data_allowed)
	d.allow
	count(d.warn) == 0
}

test_wrong_evidence_kind_denied if denied(object.union(good, {"kind": "mlsec.evidence.data/v1"}), "evidence kind")

test_unknown_environment_denied if {
	some msg in decide(good, "nope", data_allowed).deny
	contains(msg, "no training policy for environment")
}

test_low_accuracy_denied if denied(object.union(good, {"metrics": {"accuracy": 0.5}}), "accuracy 0.5 below dev minimum 0.7")

test_low_auc_denied if denied(object.union(good, {"metrics": {"auc": 0.55}}), "AUC 0.55 below dev minimum 0.7")

test_unfair_model_denied if {
	denied(object.union(good, {"fairness": {"demographic_parity_difference": 0.4}}), "demographic parity difference 0.4 on")
}

test_prod_requires_fairness if {
	ev := object.remove(good, ["fairness"])
	some msg in decide(ev, "prod", data_allowed).deny
	contains(msg, "requires a fairness measurement")
}

test_missing_fairness_warns_in_dev if {
	d := decide(object.remove(good, ["fairness"]), "dev", data_allowed)
	d.allow
	"no fairness measurement in the evidence" in d.warn
}

test_no_data_decision_denied if {
	some msg in decide(good, "dev", []).deny
	contains(msg, "no allowing data-gate decision")
}

test_data_decision_for_other_dataset_denied if {
	some msg in decide(good, "dev", [{"gate": "data", "allow": true, "subject": "other"}]).deny
	contains(msg, "no allowing data-gate decision")
}

test_prod_is_stricter_than_dev if {
	ev := object.union(good, {"metrics": {"accuracy": 0.78}})
	decide(ev, "dev", data_allowed).allow
	not decide(ev, "prod", data_allowed).allow
}

test_misnamed_threshold_denied if {
	training := object.remove(data.data.dev.training, ["min_accuracy"])
	d := decide(object.union(good, {"metrics": {"accuracy": 0.1}}), "dev", data_allowed)
		with data.data.dev.training as object.union(training, {"min_acuracy": 0.7})
	not d.allow
	"policy data dev.training.min_accuracy is missing" in d.deny
}

test_mistyped_threshold_denied if {
	d := decide(good, "dev", data_allowed) with data.data.dev.training.require_fairness as "yes"
	"policy data dev.training.require_fairness: expected boolean, found string" in d.deny
}

test_data_decision_under_another_environment_denied if {
	d := gate.decision with input as {"environment": "prod", "evidence": good, "decisions": data_allowed}
	"the data-gate decision for d0378d3f5b3c89ad6b648593024747f712f529fcc1ef43846784547cdf2499d6 was taken under the dev policy, not prod (a decision counts only in the environment that took it)" in d.deny
}

# An integral measurement (a perfect or a zero score) renders as a number too, never as a format error.
test_integral_accuracy_renders if denied(object.union(good, {"metrics": {"accuracy": 0}}), "accuracy 0 below dev minimum 0.7")
