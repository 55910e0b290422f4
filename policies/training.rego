# Training gate: the model is good enough and fair enough for this environment,
# and the run that made it is on record.
package mlsec.gates.training

import data.mlsec.lib.config
import data.mlsec.lib.decisions

cfg := data.data[input.environment].training

# Every key this policy reads from cfg, with its type (see lib/config.rego).
config_types := {"min_accuracy": "number", "min_auc": "number", "max_demographic_parity_difference": "number",
	"require_fairness": "boolean"}

config_problems := config.problems([input.environment, "training"], cfg, config_types)

ev := input.evidence

deny contains msg if {
	not ev.kind == "mlsec.evidence.training/v1"
	msg := sprintf("evidence kind %v is not mlsec.evidence.training/v1", [object.get(input, ["evidence", "kind"], null)])
}

deny contains msg if {
	not cfg
	msg := sprintf("no training policy for environment %q", [input.environment])
}

deny contains msg if {
	some msg in config_problems
}

deny contains msg if {
	ev.metrics.accuracy < cfg.min_accuracy
	msg := sprintf("accuracy %v below %s minimum %v", [r3(ev.metrics.accuracy), input.environment, r3(cfg.min_accuracy)])
}

deny contains msg if {
	ev.metrics.auc < cfg.min_auc
	msg := sprintf("AUC %v below %s minimum %v", [r3(ev.metrics.auc), input.environment, r3(cfg.min_auc)])
}

deny contains msg if {
	ev.fairness.demographic_parity_difference > cfg.max_demographic_parity_difference
	msg := sprintf("demographic parity difference %v on %q above %s maximum %v", [r3(ev.fairness.demographic_parity_difference), ev.fairness.protected_attribute, input.environment, r3(cfg.max_demographic_parity_difference)])
}

deny contains msg if {
	cfg.require_fairness
	not ev.fairness
	msg := sprintf("%s requires a fairness measurement and the evidence has none", [input.environment])
}

deny contains msg if {
	not decisions.allowed("data", ev.dataset_digest)
	msg := decisions.missing("data", ev.dataset_digest)
}

warn contains msg if {
	not ev.fairness
	msg := "no fairness measurement in the evidence"
}

decision := {"allow": count(deny) == 0, "deny": deny, "warn": warn}

# Numbers in reasons: three decimals at most, rendered with %v so an integral value (0, 1) prints too.
r3(x) := round(x * 1000) / 1000
