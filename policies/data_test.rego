package mlsec.gates.data_test

import data.mlsec.gates.data as gate

good := {
	"kind": "mlsec.evidence.data/v1",
	"subject": {"name": "dataset", "digest": "d0378d3f5b3c89ad6b648593024747f712f529fcc1ef43846784547cdf2499d6"},
	"rows": 4000,
	"columns": ["age", "default"],
	"contract": {"name": "credit-scoring", "version": "1.0.0", "passed": true, "failures": []},
	"pii": {"declared": {"ssn": "drop"}, "undeclared_findings": [], "raw_pii_remaining": false},
	"provenance": {"source_uri": "data/credit_sample.csv", "source_sha256": "ab", "ingested_by": "mlsec"},
	"poisoning": {
		"conflicting_duplicates": 0, "label_rate": 0.22, "screened": true,
		"reference": {"source": "shipped", "detail": "credit_reference.json", "rows": 4000},
		"label_shift": [{"group": "gender=F", "rows": 2000, "rate": 0.23, "reference_rate": 0.22, "z": 1.1, "p_value": 0.27}],
		"drift": [{"feature": "income", "group": "gender=F", "psi": 0.01, "ks": 0.03, "ks_p_value": 0.2}],
		"label_issues": [{"label": 1, "rows": 900, "suspected": 270, "share": 0.3}],
		"triggers": [],
		"duplicate_share": 0, "near_duplicate_share": 0, "outlier_share": 0.22,
	},
}

decide(ev, env) := d if {
	d := gate.decision with input as {"environment": env, "evidence": ev, "decisions": []}
}

denied(ev, fragment) if {
	some msg in decide(ev, "dev").deny
	contains(msg, fragment)
}

test_good_dataset_allowed if {
	d := decide(good, "dev")
	d.allow
	count(d.deny) == 0
}

test_wrong_evidence_kind_denied if denied(object.union(good, {"kind": "mlsec.evidence.training/v1"}), "evidence kind")

test_unknown_environment_denied if {
	some msg in decide(good, "nope").deny
	contains(msg, "no data policy for environment")
}

test_failed_contract_denied if {
	ev := object.union(good, {"contract": {"passed": false, "failures": ["age: out of range"]}})
	denied(ev, "data contract failed: age: out of range")
}

test_raw_pii_denied if denied(object.union(good, {"pii": {"raw_pii_remaining": true}}), "raw PII would reach training")

test_undeclared_pii_denied if {
	ev := object.union(good, {"pii": {"undeclared_findings": [{"column": "#15 (header not in contract)", "kind": "email", "matches": 3}]}})
	denied(ev, `column "#15 (header not in contract)" holds undeclared PII: 3 email values`)
}

test_too_few_rows_denied if denied(object.union(good, {"rows": 10}), "row count 10 below minimum")

test_too_many_rows_denied if denied(object.union(good, {"rows": 999999999}), "above maximum")

test_missing_provenance_denied if denied(object.union(good, {"provenance": {"source_uri": ""}}), "provenance has no source URI")

test_conflicting_duplicates_denied if {
	denied(object.union(good, {"poisoning": {"conflicting_duplicates": 5}}), "5 identical rows carry conflicting labels")
}

test_label_rate_out_of_bounds_denied if {
	denied(object.union(good, {"poisoning": {"label_rate": 0.999}}), "label rate 0.999 outside")
}

# An integer where a float is usual (canonical JSON writes 0.0 as 0) still renders as a number.
test_integer_label_rate_renders if {
	some msg in decide(object.union(good, {"poisoning": {"label_rate": 0}}), "dev").deny
	msg == "label rate 0 outside [0.02, 0.98]"
}

failed_ingest := object.union(good, {
	"rows": 0, "columns": [],
	"contract": {"passed": false, "failures": []},
	"poisoning": {"conflicting_duplicates": 0, "label_rate": 0},
	"errors": [{"code": "source_missing", "message": "dataset not found: nowhere.csv"}],
})

test_ingest_error_denied_with_its_reason_alone if {
	d := decide(failed_ingest, "dev")
	not d.allow
	d.deny == {"ingest failed (source_missing): dataset not found: nowhere.csv"}
}

test_malformed_error_entry_denied if {
	denied(object.union(good, {"errors": ["boom"]}), "ingest failed: malformed error entry")
}

test_errors_not_a_list_denied if {
	d := decide(object.union(good, {"errors": "boom"}), "dev")
	"evidence field errors is not a list" in d.deny
}

test_contract_failed_without_a_failure_denied if {
	denied(object.union(good, {"contract": {"passed": false, "failures": []}}), "data contract failed without naming a failure")
}

test_pii_in_a_header_denied if {
	finding := {"column": "#3 (header not in contract)", "kind": "email", "matches": 1, "location": "header"}
	denied(object.union(good, {"pii": {"undeclared_findings": [finding]}}), "the header of column #3 (header not in contract) looks like email")
}

test_masked_pii_warns if {
	d := decide(object.union(good, {"pii": {"declared": {"zip": "mask"}}}), "dev")
	d.allow
	some w in d.warn
	contains(w, `PII column "zip" is kept masked`)
}

test_prod_needs_more_rows if {
	d := decide(object.union(good, {"rows": 800}), "prod")
	not d.allow
	decide(object.union(good, {"rows": 800}), "dev").allow
}

test_misnamed_threshold_denied if {
	patched := object.union(data.data, {"dev": {"data": {"min_rows": null}}})
	d := gate.decision with input as {"environment": "dev", "evidence": good, "decisions": []} with data.data as patched
	"policy data dev.data.min_rows is missing" in d.deny
}

# -- poisoning screens ----------------------------------------------------------------------------
cfg := data.data.dev.data

with_poison(patch) := object.union(good, {"poisoning": patch})

allowed(ev) if decide(ev, "dev").allow

screens_denied(ev, fragment) if {
	some msg in decide(ev, "dev").deny
	contains(msg, fragment)
}

shift(rate, p) := with_poison({"label_shift": [{"group": "all", "rows": 4000, "rate": rate, "reference_rate": 0, "z": 9.5, "p_value": p}]})

test_label_shift_boundaries if {
	allowed(shift(cfg.max_label_shift, 0))
	allowed(shift(cfg.max_label_shift - 0.001, 0))
	screens_denied(shift(cfg.max_label_shift + 0.001, 0), "label rate of all rows is 0.051 against the reference's 0 (z=9.5, p=0;")
	allowed(shift(0.9, cfg.label_shift_alpha))
	screens_denied(shift(0.9, cfg.label_shift_alpha - 0.0001), "possible label flipping")
}

# A shift downwards counts as much as one upwards.
test_label_shift_downwards_denied if {
	ev := with_poison({"label_shift": [{"group": "gender=F", "rows": 2000, "rate": 0.02, "reference_rate": 0.22, "z": -20, "p_value": 0}]})
	screens_denied(ev, "label rate of gender=F rows is 0.02 against the reference's 0.22")
}

drift(psi, ks, p) := with_poison({"drift": [{"feature": "income", "group": "gender=F", "psi": psi, "ks": ks, "ks_p_value": p}]})

test_psi_boundaries if {
	allowed(drift(cfg.max_psi, 0, 1))
	allowed(drift(cfg.max_psi - 0.001, 0, 1))
	screens_denied(drift(cfg.max_psi + 0.001, 0, 1), "feature income drifted from the reference in gender=F rows: PSI 0.201 above 0.2")
}

test_ks_boundaries if {
	allowed(drift(0, cfg.max_ks, 0))
	allowed(drift(0, cfg.max_ks - 0.001, 0))
	screens_denied(drift(0, cfg.max_ks + 0.001, 0), "feature income drifted from the reference in gender=F rows: KS 0.101 above 0.1 (p=0)")
	allowed(drift(0, 0.5, cfg.drift_alpha))
	screens_denied(drift(0, 0.5, cfg.drift_alpha - 0.0001), "KS 0.5 above")
}

issues(share) := with_poison({"label_issues": [{"label": 1, "rows": 1000, "suspected": 500, "share": share}]})

test_label_issue_boundaries if {
	allowed(issues(cfg.max_label_issue_share))
	allowed(issues(cfg.max_label_issue_share - 0.001))
	screens_denied(issues(cfg.max_label_issue_share + 0.001), "confident learning suspects 500 of the 1000 rows labelled 1 (share 0.401, maximum 0.4)")
}

trigger(share, purity) := with_poison({"triggers": [{"pattern": "age in bin 1 & credit_history_years in bin 4", "rows": 80, "share": share, "label": 0, "purity": purity, "reference_share": 0}]})

test_trigger_boundaries if {
	allowed(trigger(cfg.max_trigger_share, 1))
	allowed(trigger(cfg.max_trigger_share - 0.001, 1))
	screens_denied(trigger(cfg.max_trigger_share + 0.001, 1), "possible backdoor trigger: 80 rows (share 0.006, maximum 0.005; reference share 0) have age in bin 1 & credit_history_years in bin 4 and 1 of them are labelled 0")
	screens_denied(trigger(0.02, cfg.min_trigger_purity), "possible backdoor trigger")
	allowed(trigger(0.02, cfg.min_trigger_purity - 0.001))
}

test_duplicate_boundaries if {
	allowed(with_poison({"duplicate_share": cfg.max_duplicate_share}))
	allowed(with_poison({"duplicate_share": cfg.max_duplicate_share - 0.001}))
	screens_denied(with_poison({"duplicate_share": cfg.max_duplicate_share + 0.001}), "exact duplicate rows: share 0.011 above 0.01")
}

test_near_duplicate_boundaries if {
	allowed(with_poison({"near_duplicate_share": cfg.max_near_duplicate_share}))
	allowed(with_poison({"near_duplicate_share": cfg.max_near_duplicate_share - 0.001}))
	screens_denied(with_poison({"near_duplicate_share": cfg.max_near_duplicate_share + 0.001}), "near-duplicate rows: share 0.011 above 0.01")
}

test_outlier_boundaries if {
	allowed(with_poison({"outlier_share": cfg.max_outlier_share}))
	allowed(with_poison({"outlier_share": cfg.max_outlier_share - 0.001}))
	screens_denied(with_poison({"outlier_share": cfg.max_outlier_share + 0.001}), "isolation-forest outliers: share 0.351 above 0.35")
}

unscreened := with_poison({"screened": false, "reference": null})

test_clean_data_not_screened_denied if {
	screens_denied(unscreened, "the poisoning screens did not run on data that passed its contract")
}

# Data denied for its contract or its PII is not screened; that is no further reason.
test_unscreened_data_denied_for_its_own_reason_only if {
	not_passed := object.union(unscreened, {"contract": {"passed": false, "failures": ["age: out of range"]}})
	every msg in decide(not_passed, "dev").deny { not contains(msg, "screens did not run") }
	pii := object.union(unscreened, {"pii": {"raw_pii_remaining": true}})
	every msg in decide(pii, "dev").deny { not contains(msg, "screens did not run") }
	finding := {"column": "#3", "kind": "email", "matches": 1}
	found := object.union(unscreened, {"pii": {"undeclared_findings": [finding]}})
	every msg in decide(found, "dev").deny { not contains(msg, "screens did not run") }
	every msg in decide(failed_ingest, "dev").deny { not contains(msg, "screens did not run") }
}

no_reference := with_poison({"reference": {"source": "none", "detail": "no accepted dataset yet"}})

# require_reference off (dev): a warning; on (prod): a deny. Both with the reason ingest gave.
test_no_reference_warns_when_not_required if {
	d := decide(no_reference, "dev")
	d.allow
	"no reference profile to screen the dataset against: no accepted dataset yet" in d.warn
	count(decide(good, "dev").warn) == 0
}

test_no_reference_denied_when_required if {
	d := decide(no_reference, "prod")
	"no reference profile to screen the dataset against: no accepted dataset yet" in d.deny
	count(d.warn) == 0
	decide(good, "prod").allow
}

test_reference_toggle_is_policy_data if {
	on := object.union(data.data, {"dev": {"data": {"require_reference": true}}})
	d := gate.decision with input as {"environment": "dev", "evidence": no_reference, "decisions": []} with data.data as on
	not d.allow
}

test_missing_reference_entry_counts_as_none if {
	ev := object.union(object.remove(good, ["poisoning"]), {"poisoning": object.remove(good.poisoning, ["reference"])})
	"no reference profile to screen the dataset against: the evidence names none" in decide(ev, "prod").deny
}

# -- boundaries and guards of the older rules ----------------------------------------------------------
test_row_count_boundaries if {
	allowed(object.union(good, {"rows": cfg.min_rows}))
	screens_denied(object.union(good, {"rows": cfg.min_rows - 1}), "below minimum")
	allowed(object.union(good, {"rows": cfg.max_rows}))
	screens_denied(object.union(good, {"rows": cfg.max_rows + 1}), "above maximum")
}

test_label_rate_boundaries if {
	allowed(with_poison({"label_rate": cfg.min_label_rate}))
	screens_denied(with_poison({"label_rate": cfg.min_label_rate - 0.001}), "label rate 0.019 outside")
	allowed(with_poison({"label_rate": cfg.max_label_rate}))
	screens_denied(with_poison({"label_rate": cfg.max_label_rate + 0.001}), "label rate 0.981 outside")
}

# errors that are not a list measure nothing: no figure is judged as if ingest had got that far.
test_errors_not_a_list_measure_nothing if {
	d := decide(object.union(good, {"errors": "", "rows": 10}), "dev")
	"evidence field errors is not a list" in d.deny
	every msg in d.deny { not contains(msg, "below minimum") }
}

test_error_entry_fields_must_be_strings if {
	screens_denied(object.union(good, {"errors": [{"code": 5, "message": "m"}]}), "ingest failed: malformed error entry")
	screens_denied(object.union(good, {"errors": [{"code": "empty", "message": 5}]}), "ingest failed: malformed error entry")
}

test_contract_rules_need_a_failed_contract if {
	allowed(object.union(good, {"contract": {"passed": true, "failures": ["age: out of range"]}}))
	d := decide(object.union(good, {"contract": {"passed": false, "failures": ["age: out of range"]}}), "dev")
	every msg in d.deny { not contains(msg, "without naming a failure") }
}

test_pii_location_picks_the_message if {
	header := {"column": "#3", "kind": "email", "matches": 1, "location": "header"}
	every msg in decide(object.union(good, {"pii": {"undeclared_findings": [header]}}), "dev").deny {
		not contains(msg, "holds undeclared PII")
	}
	values := {"column": "#3", "kind": "email", "matches": 1, "location": "values"}
	every msg in decide(object.union(good, {"pii": {"undeclared_findings": [values]}}), "dev").deny {
		not contains(msg, "the header of column")
	}
}

# Ingest errors with a contract that passed: no dataset, so no screens and no complaint about them.
test_failed_ingest_is_not_asked_for_screens if {
	ev := object.union(unscreened, {"errors": [{"code": "internal", "message": "boom"}]})
	every msg in decide(ev, "dev").deny { not contains(msg, "screens did not run") }
}

test_unscreened_data_has_no_reference_complaint if {
	d := decide(unscreened, "prod")
	every msg in d.deny { not contains(msg, "no reference profile") }
	every msg in decide(unscreened, "dev").warn { not contains(msg, "no reference profile") }
}
