# Data gate: the dataset training will read passed its contract, carries no raw PII,
# is traceable to its source, and shows no obvious poisoning.
package mlsec.gates.data

import data.mlsec.lib.config

cfg := data.data[input.environment].data

# Every key this policy reads from cfg, with its type (see lib/config.rego).
config_types := {"min_rows": "number", "max_rows": "number", "max_conflicting_duplicates": "number",
	"min_label_rate": "number", "max_label_rate": "number", "require_reference": "boolean",
	"max_label_shift": "number", "label_shift_alpha": "number", "max_psi": "number", "max_ks": "number",
	"drift_alpha": "number", "max_label_issue_share": "number", "max_trigger_share": "number",
	"min_trigger_purity": "number", "max_duplicate_share": "number", "max_near_duplicate_share": "number",
	"max_outlier_share": "number"}

config_problems := config.problems([input.environment, "data"], cfg, config_types)

ev := input.evidence

# Ingest could not produce or judge a dataset (source refused, missing, empty, not UTF-8, ...).
errors := object.get(ev, "errors", [])

# Measurements (row count, label rate, duplicates) mean something only when ingest got that far.
measured if {
	is_array(errors)
	count(errors) == 0
}

# Numbers render with %v: a %f or %d verb given a value of the other JSON number type renders as %!f(..).
num3(x) := round(x * 1000) / 1000

deny contains msg if {
	not ev.kind == "mlsec.evidence.data/v1"
	msg := sprintf("evidence kind %v is not mlsec.evidence.data/v1", [object.get(input, ["evidence", "kind"], null)])
}

deny contains msg if {
	not cfg
	msg := sprintf("no data policy for environment %q", [input.environment])
}

deny contains msg if {
	some msg in config_problems
}

deny contains msg if {
	some e in errors
	msg := error_message(e)
}

deny contains msg if {
	not is_array(errors)
	msg := "evidence field errors is not a list"
}

error_message(e) := sprintf("ingest failed (%v): %v", [e.code, e.message]) if {
	is_string(e.code)
	is_string(e.message)
} else := sprintf("ingest failed: malformed error entry %v", [e])

deny contains msg if {
	not ev.contract.passed
	failures := object.get(ev, ["contract", "failures"], [])
	count(failures) > 0
	msg := sprintf("data contract failed: %s", [concat("; ", failures)])
}

deny contains msg if {
	not ev.contract.passed
	count(object.get(ev, ["contract", "failures"], [])) == 0
	measured
	msg := "data contract failed without naming a failure"
}

deny contains msg if {
	ev.pii.raw_pii_remaining
	msg := "raw PII would reach training (declared PII columns were not dropped or masked)"
}

deny contains msg if {
	some f in ev.pii.undeclared_findings
	object.get(f, "location", "values") == "values"
	msg := sprintf("column %q holds undeclared PII: %v %v values", [f.column, f.matches, f.kind])
}

deny contains msg if {
	some f in ev.pii.undeclared_findings
	f.location == "header"
	msg := sprintf("the header of column %v looks like %v: the header row may be data, or the file has no header", [f.column, f.kind])
}

deny contains msg if {
	measured
	ev.rows < cfg.min_rows
	msg := sprintf("row count %v below minimum %v", [ev.rows, cfg.min_rows])
}

deny contains msg if {
	ev.rows > cfg.max_rows
	msg := sprintf("row count %v above maximum %v", [ev.rows, cfg.max_rows])
}

deny contains msg if {
	ev.provenance.source_uri == ""
	msg := "provenance has no source URI"
}

deny contains msg if {
	ev.poisoning.conflicting_duplicates > cfg.max_conflicting_duplicates
	msg := sprintf("%v identical rows carry conflicting labels (maximum %v): possible label flipping", [ev.poisoning.conflicting_duplicates, cfg.max_conflicting_duplicates])
}

deny contains msg if {
	measured
	not label_rate_in_bounds
	msg := sprintf("label rate %v outside [%v, %v]", [num3(ev.poisoning.label_rate), cfg.min_label_rate, cfg.max_label_rate])
}

label_rate_in_bounds if {
	ev.poisoning.label_rate >= cfg.min_label_rate
	ev.poisoning.label_rate <= cfg.max_label_rate
}

# -- poisoning screens against the reference profile (mlsec.ingest.screens) -----------------------------
poison := object.get(ev, "poisoning", {})

# The screens run on clean data only: data denied for its contract or PII is not screened.
clean_data if {
	measured
	ev.contract.passed
	count(ev.pii.undeclared_findings) == 0
	not ev.pii.raw_pii_remaining
}

deny contains msg if {
	clean_data
	not poison.screened
	msg := "the poisoning screens did not run on data that passed its contract"
}

no_reference if {
	poison.screened
	object.get(poison, ["reference", "source"], "none") == "none"
}

no_reference_message := sprintf("no reference profile to screen the dataset against: %v", [object.get(poison, ["reference", "detail"], "the evidence names none")])

deny contains msg if {
	no_reference
	cfg.require_reference
	msg := no_reference_message
}

warn contains msg if {
	no_reference
	not cfg.require_reference
	msg := no_reference_message
}

deny contains msg if {
	some s in poison.label_shift
	s.p_value < cfg.label_shift_alpha
	abs(s.rate - s.reference_rate) > cfg.max_label_shift
	msg := sprintf("label rate of %v rows is %v against the reference's %v (z=%v, p=%v; allowed: %v apart, or a p of at least %v): possible label flipping", [s.group, num3(s.rate), num3(s.reference_rate), num3(s.z), s.p_value, cfg.max_label_shift, cfg.label_shift_alpha])
}

deny contains msg if {
	some d in poison.drift
	d.psi > cfg.max_psi
	msg := sprintf("feature %v drifted from the reference in %v rows: PSI %v above %v", [d.feature, d.group, num3(d.psi), cfg.max_psi])
}

deny contains msg if {
	some d in poison.drift
	d.ks > cfg.max_ks
	d.ks_p_value < cfg.drift_alpha
	msg := sprintf("feature %v drifted from the reference in %v rows: KS %v above %v (p=%v)", [d.feature, d.group, num3(d.ks), cfg.max_ks, d.ks_p_value])
}

deny contains msg if {
	some li in poison.label_issues
	li.share > cfg.max_label_issue_share
	msg := sprintf("confident learning suspects %v of the %v rows labelled %v (share %v, maximum %v): possible label flipping", [li.suspected, li.rows, li.label, num3(li.share), cfg.max_label_issue_share])
}

deny contains msg if {
	some t in poison.triggers
	t.purity >= cfg.min_trigger_purity
	t.share > cfg.max_trigger_share
	msg := sprintf("possible backdoor trigger: %v rows (share %v, maximum %v; reference share %v) have %v and %v of them are labelled %v", [t.rows, num3(t.share), cfg.max_trigger_share, num3(t.reference_share), t.pattern, num3(t.purity), t.label])
}

deny contains msg if {
	poison.duplicate_share > cfg.max_duplicate_share
	msg := sprintf("exact duplicate rows: share %v above %v", [num3(poison.duplicate_share), cfg.max_duplicate_share])
}

deny contains msg if {
	poison.near_duplicate_share > cfg.max_near_duplicate_share
	msg := sprintf("near-duplicate rows: share %v above %v", [num3(poison.near_duplicate_share), cfg.max_near_duplicate_share])
}

deny contains msg if {
	poison.outlier_share > cfg.max_outlier_share
	msg := sprintf("isolation-forest outliers: share %v above %v", [num3(poison.outlier_share), cfg.max_outlier_share])
}

warn contains msg if {
	some column, action in ev.pii.declared
	action == "mask"
	msg := sprintf("PII column %q is kept masked; drop it if the model does not need it", [column])
}

decision := {"allow": count(deny) == 0, "deny": deny, "warn": warn}
