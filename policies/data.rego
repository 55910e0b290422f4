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
	not ev.contract.passed
	msg := sprintf("data contract failed: %s", [concat("; ", object.get(ev, ["contract", "failures"], []))])
}

deny contains msg if {
	ev.pii.raw_pii_remaining
	msg := "raw PII would reach training (declared PII columns were not dropped or masked)"
}

deny contains msg if {
	some f in ev.pii.undeclared_findings
	msg := sprintf("column %q holds undeclared PII: %d %s values", [f.column, f.matches, f.kind])
}

deny contains msg if {
	ev.rows < cfg.min_rows
	msg := sprintf("row count %d below minimum %d", [ev.rows, cfg.min_rows])
}

deny contains msg if {
	ev.rows > cfg.max_rows
	msg := sprintf("row count %d above maximum %d", [ev.rows, cfg.max_rows])
}

deny contains msg if {
	ev.provenance.source_uri == ""
	msg := "provenance has no source URI"
}

deny contains msg if {
	ev.poisoning.conflicting_duplicates > cfg.max_conflicting_duplicates
	msg := sprintf("%d identical rows carry conflicting labels (maximum %d): possible label flipping", [ev.poisoning.conflicting_duplicates, cfg.max_conflicting_duplicates])
}

deny contains msg if {
	not label_rate_in_bounds
	msg := sprintf("label rate %.3f outside [%.3f, %.3f]", [ev.poisoning.label_rate, cfg.min_label_rate, cfg.max_label_rate])
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
