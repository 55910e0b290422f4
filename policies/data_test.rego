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
	"poisoning": {"conflicting_duplicates": 0, "label_rate": 0.22},
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
