package mlsec.gates.training_test

import data.mlsec.gates.training as gate

dataset := "d0378d3f5b3c89ad6b648593024747f712f529fcc1ef43846784547cdf2499d6"

good := {
	"kind": "mlsec.evidence.training/v1",
	"subject": {"name": "credit", "digest": "072d48ebb4b5068b04063ff8aa5d079924371519871b313d0e9947f4d0085bed"},
	"dataset_digest": dataset,
	"files": ["config.json", "model.safetensors"],
	"metrics": {"accuracy": 0.9, "auc": 0.9, "holdout_rows": 1000},
	"fairness": {
		"protected_attribute": "gender", "demographic_parity_difference": 0.01, "equalized_odds_difference": 0.02,
		"groups": {"F": {"rows": 500, "selection_rate": 0.2, "true_positive_rate": 0.5, "false_positive_rate": 0.07}},
	},
	"robustness": {"space": "standardized", "rows": 500, "clean_accuracy": 0.85, "attacks": [
		{"attack": "fgsm", "epsilon": 0.1, "accuracy": 0.8},
		{"attack": "pgd", "epsilon": 0.1, "accuracy": 0.79},
		{"attack": "pgd", "epsilon": 0.3, "accuracy": 0.5},
	]},
	"privacy": {"members": 500, "non_members": 500, "membership": [
		{"attack": "black_box", "auc": 0.5, "advantage": 0.04},
		{"attack": "loss_threshold", "auc": 0.51, "advantage": 0.04},
	]},
	"supply_chain": {"sbom_file": "sbom.cdx.json", "sbom_digest": dataset, "sbom_components": 200},
	"run": {"device": "cpu", "epochs": 30, "epochs_run": 12, "seed": 0, "torch_version": "2.13.0", "mlsec_version": "0.1.0", "duration_s": 3},
}

watermarked := object.union(good, {"watermark": {"key_id": "e145f5ae9ab7ec4e", "triggers": 24, "agreement": 1, "threshold": 0.9, "verified": true, "clean_accuracy_cost": 0.02}})

private := object.union(good, {"privacy": {"dp": {"target_epsilon": 3, "delta": 0.00001, "epsilon": 2.5, "noise_multiplier": 1.8, "max_grad_norm": 1}}})

pickled_base := {"digest": dataset, "format": "pickle", "scans": [{"scanner": "picklescan 1.0.5", "issues": []}, {"scanner": "modelscan 0.8.8", "issues": []}]}

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

# -- thresholds at their boundary: at the bar passes, a hair beyond it fails (a `<`/`<=` flip fails a test) --

# Deny reasons of ev judged in env, with dev's training data replaced by cfg (defaults to dev's own).
reasons(ev, env, overrides) := r if {
	training := object.union(data.data[env].training, overrides)
	r := decide(ev, env, data_allowed).deny with data.data as object.union(data.data, {env: object.union(data.data[env], {"training": training})})
}

no_reason(ev, env, overrides, fragment) if {
	every msg in reasons(ev, env, overrides) {
		not contains(msg, fragment)
	}
}

has_reason(ev, env, overrides, fragment) if {
	some msg in reasons(ev, env, overrides)
	contains(msg, fragment)
}

test_accuracy_and_auc_at_the_boundary if {
	no_reason(good, "dev", {"min_accuracy": 0.9, "min_auc": 0.9}, "below dev minimum")
	has_reason(good, "dev", {"min_accuracy": 0.901}, "accuracy 0.9 below dev minimum 0.901")
	has_reason(good, "dev", {"min_auc": 0.901}, "AUC 0.9 below dev minimum 0.901")
}

test_demographic_parity_at_the_boundary if {
	no_reason(good, "dev", {"max_demographic_parity_difference": 0.01}, "demographic parity")
	has_reason(good, "dev", {"max_demographic_parity_difference": 0.009}, "demographic parity difference 0.01 on")
}

test_equalized_odds_at_the_boundary if {
	no_reason(good, "dev", {"max_equalized_odds_difference": 0.02}, "equalized odds")
	has_reason(good, "dev", {"max_equalized_odds_difference": 0.019}, "equalized odds difference 0.02 on \"gender\" above dev maximum 0.019")
}

test_equalized_odds_per_environment if {
	ev := object.union(good, {"fairness": {"equalized_odds_difference": 0.25}})
	no_reason(ev, "dev", {}, "equalized odds")
	has_reason(ev, "staging", {}, "above staging maximum 0.2")
	has_reason(ev, "prod", {}, "above prod maximum 0.15")
}

test_robust_accuracy_at_the_boundary if {
	no_reason(good, "dev", {"min_robust_accuracy": 0.79}, "robust accuracy")
	has_reason(good, "dev", {"min_robust_accuracy": 0.791}, "PGD robust accuracy 0.79 at epsilon 0.1 below dev minimum 0.791")
}

test_robust_accuracy_judged_up_to_the_radius_only if {
	# the 0.3 result (accuracy 0.5) is judged once the radius reaches it, not before
	no_reason(good, "dev", {"robustness_epsilon": 0.299}, "robust accuracy 0.5")
	has_reason(good, "dev", {"robustness_epsilon": 0.3}, "PGD robust accuracy 0.5 at epsilon 0.3 below dev minimum")
}

test_robust_accuracy_per_environment if {
	ev := object.union(good, {"robustness": {"attacks": [{"attack": "pgd", "epsilon": 0.1, "accuracy": 0.68}]}})
	no_reason(ev, "dev", {}, "robust accuracy")
	no_reason(ev, "staging", {}, "robust accuracy")
	has_reason(ev, "prod", {}, "PGD robust accuracy 0.68 at epsilon 0.1 below prod minimum 0.7")
}

test_fgsm_counts_too if {
	ev := object.union(good, {"robustness": {"attacks": [{"attack": "fgsm", "epsilon": 0.05, "accuracy": 0.1}, {"attack": "pgd", "epsilon": 0.1, "accuracy": 0.9}]}})
	has_reason(ev, "dev", {}, "FGSM robust accuracy 0.1 at epsilon 0.05 below dev minimum")
}

test_require_robustness_on_and_off if {
	ev := object.remove(good, ["robustness"])
	has_reason(ev, "dev", {"require_robustness": true}, "dev requires PGD robust accuracy at epsilon 0.1")
	no_reason(ev, "dev", {"require_robustness": false}, "requires PGD robust accuracy")
	"no robustness measurement in the evidence" in decide(ev, "dev", data_allowed).warn
}

test_required_robustness_needs_pgd_at_the_judged_radius if {
	fgsm_only := object.union(good, {"robustness": {"attacks": [{"attack": "fgsm", "epsilon": 0.1, "accuracy": 0.9}]}})
	has_reason(fgsm_only, "prod", {}, "prod requires PGD robust accuracy at epsilon 0.1")
	elsewhere := object.union(good, {"robustness": {"attacks": [{"attack": "pgd", "epsilon": 0.05, "accuracy": 0.9}]}})
	has_reason(elsewhere, "prod", {}, "prod requires PGD robust accuracy")
	no_reason(good, "prod", {}, "requires PGD robust accuracy")
}

test_membership_auc_at_the_boundary if {
	no_reason(good, "dev", {"max_membership_auc": 0.51}, "membership inference")
	has_reason(good, "dev", {"max_membership_auc": 0.509}, "membership inference (loss_threshold) AUC 0.51 above dev maximum 0.509")
}

test_membership_auc_per_environment if {
	ev := object.union(good, {"privacy": {"membership": [{"attack": "black_box", "auc": 0.62, "advantage": 0.2}]}})
	no_reason(ev, "dev", {}, "membership inference")
	no_reason(ev, "staging", {}, "membership inference")
	has_reason(ev, "prod", {}, "membership inference (black_box) AUC 0.62 above prod maximum 0.6")
}

test_require_privacy_measurement_on_and_off if {
	ev := object.remove(good, ["privacy"])
	has_reason(ev, "dev", {"require_privacy_measurement": true}, "dev requires a membership-inference measurement")
	no_reason(ev, "dev", {"require_privacy_measurement": false}, "membership-inference measurement")
	has_reason(ev, "prod", {}, "prod requires a membership-inference measurement")
}

test_dp_epsilon_at_the_boundary if {
	no_reason(private, "dev", {"max_dp_epsilon": 2.5}, "DP-SGD")
	has_reason(private, "dev", {"max_dp_epsilon": 2.499}, "DP-SGD spent epsilon 2.5 above dev maximum 2.499")
}

test_dp_epsilon_per_environment if {
	ev := object.union(private, {"privacy": {"dp": {"epsilon": 5}}})
	no_reason(ev, "staging", {}, "DP-SGD")
	has_reason(ev, "prod", {}, "DP-SGD spent epsilon 5 above prod maximum 4")
}

test_require_dp_on_and_off if {
	has_reason(good, "prod", {"require_dp": true}, "prod requires differentially private training")
	no_reason(good, "prod", {"require_dp": false}, "differentially private")
	no_reason(private, "prod", {"require_dp": true}, "differentially private")
}

test_failed_watermark_denied_even_when_not_required if {
	ev := object.union(watermarked, {"watermark": {"agreement": 0.5, "verified": false}})
	has_reason(ev, "dev", {"require_watermark": false}, "ownership watermark (key e145f5ae9ab7ec4e) not verified: 0.5 of triggers answered, 0.9 needed")
	no_reason(watermarked, "dev", {"require_watermark": true}, "watermark")
}

test_require_watermark_on_and_off if {
	has_reason(good, "prod", {"require_watermark": true}, "prod requires an ownership watermark")
	no_reason(good, "prod", {"require_watermark": false}, "watermark")
}

test_base_model_scan_findings_denied if {
	found := object.union(pickled_base, {"scans": [{"scanner": "picklescan 1.0.5", "issues": ["posix.system (dangerous)"]}]})
	ev := object.union(good, {"supply_chain": {"base_model": found}})
	has_reason(ev, "dev", {"allow_pickle_base_model": true}, "picklescan 1.0.5 found [\"posix.system (dangerous)\"]")
}

test_unscanned_pickle_base_model_denied if {
	ev := object.union(good, {"supply_chain": {"base_model": object.union(pickled_base, {"scans": []})}})
	has_reason(ev, "dev", {"allow_pickle_base_model": true}, "is a pickle that no scanner read")
	scanned := object.union(good, {"supply_chain": {"base_model": pickled_base}})
	no_reason(scanned, "dev", {"allow_pickle_base_model": true}, "base model")
}

test_allow_pickle_base_model_on_and_off if {
	ev := object.union(good, {"supply_chain": {"base_model": pickled_base}})
	no_reason(ev, "dev", {"allow_pickle_base_model": true}, "base model")
	has_reason(ev, "dev", {"allow_pickle_base_model": false}, "is a pickle; dev allows only safetensors base models")
	has_reason(ev, "prod", {}, "prod allows only safetensors base models")
	safetensors := object.union(good, {"supply_chain": {"base_model": {"digest": dataset, "format": "safetensors", "scans": []}}})
	no_reason(safetensors, "prod", {}, "base model")
}

test_require_sbom_on_and_off if {
	ev := object.remove(good, ["supply_chain"])
	has_reason(ev, "dev", {"require_sbom": true}, "dev requires an SBOM of the training environment")
	no_reason(ev, "dev", {"require_sbom": false}, "SBOM")
	has_reason(ev, "prod", {}, "prod requires an SBOM")
}

test_complete_evidence_allowed_everywhere if {
	every env in ["dev", "staging", "prod"] {
		d := decide(watermarked, env, data_allowed)
		d.allow
	}
}
