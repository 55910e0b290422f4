# Data gate: the dataset training will read passed its contract, carries no raw PII,
# is traceable to its source, and shows no obvious poisoning.
package mlsec.gates.data

import data.mlsec.lib.config

cfg := data.data[input.environment].data

# Every key this policy reads from cfg, with its type (see lib/config.rego).
config_types := {"min_rows": "number", "max_rows": "number", "max_conflicting_duplicates": "number",
	"min_label_rate": "number", "max_label_rate": "number"}

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

warn contains msg if {
	some column, action in ev.pii.declared
	action == "mask"
	msg := sprintf("PII column %q is kept masked; drop it if the model does not need it", [column])
}

decision := {"allow": count(deny) == 0, "deny": deny, "warn": warn}
