# Training gate: the model is good enough and fair enough for this environment,
# and the run that made it is on record.
package mlsec.gates.training

import data.mlsec.lib.config
import data.mlsec.lib.decisions

cfg := data.data[input.environment].training

# Every key this policy reads from cfg, with its type (see lib/config.rego).
config_types := {
	"min_accuracy": "number", "min_auc": "number", "max_demographic_parity_difference": "number",
	"max_equalized_odds_difference": "number", "require_fairness": "boolean",
	"require_robustness": "boolean", "robustness_epsilon": "number", "min_robust_accuracy": "number",
	"require_privacy_measurement": "boolean", "max_membership_auc": "number",
	"require_dp": "boolean", "max_dp_epsilon": "number", "require_watermark": "boolean",
	"allow_pickle_base_model": "boolean", "require_sbom": "boolean",
}

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
	ev.fairness.equalized_odds_difference > cfg.max_equalized_odds_difference
	msg := sprintf("equalized odds difference %v on %q above %s maximum %v", [r3(ev.fairness.equalized_odds_difference), ev.fairness.protected_attribute, input.environment, r3(cfg.max_equalized_odds_difference)])
}

# Robustness: every attack at or below the judged radius must leave enough accuracy; a larger radius
# is reported but not judged (any model falls at some radius).
deny contains msg if {
	some a in ev.robustness.attacks
	a.epsilon <= cfg.robustness_epsilon
	a.accuracy < cfg.min_robust_accuracy
	msg := sprintf("%s robust accuracy %v at epsilon %v below %s minimum %v", [upper(a.attack), r3(a.accuracy), a.epsilon, input.environment, r3(cfg.min_robust_accuracy)])
}

# The trainer picks the radii it measures: the judged one must be among them, for PGD (the stronger attack).
deny contains msg if {
	cfg.require_robustness
	not measured_pgd_at_judged_radius
	msg := sprintf("%s requires PGD robust accuracy at epsilon %v and the evidence has none", [input.environment, cfg.robustness_epsilon])
}

measured_pgd_at_judged_radius if {
	some a in ev.robustness.attacks
	a.attack == "pgd"
	a.epsilon == cfg.robustness_epsilon
}

deny contains msg if {
	some m in ev.privacy.membership
	m.auc > cfg.max_membership_auc
	msg := sprintf("membership inference (%s) AUC %v above %s maximum %v: the model leaks who was in its training data", [m.attack, r3(m.auc), input.environment, r3(cfg.max_membership_auc)])
}

deny contains msg if {
	cfg.require_privacy_measurement
	count(object.get(ev, ["privacy", "membership"], [])) == 0
	msg := sprintf("%s requires a membership-inference measurement and the evidence has none", [input.environment])
}

deny contains msg if {
	ev.privacy.dp.epsilon > cfg.max_dp_epsilon
	msg := sprintf("DP-SGD spent epsilon %v above %s maximum %v", [r3(ev.privacy.dp.epsilon), input.environment, r3(cfg.max_dp_epsilon)])
}

deny contains msg if {
	cfg.require_dp
	not ev.privacy.dp
	msg := sprintf("%s requires differentially private training (DP-SGD) and the evidence has none", [input.environment])
}

# A watermark that the model no longer answers is refused whether or not one is required.
deny contains msg if {
	ev.watermark.verified == false
	msg := sprintf("ownership watermark (key %s) not verified: %v of triggers answered, %v needed", [ev.watermark.key_id, r3(ev.watermark.agreement), r3(ev.watermark.threshold)])
}

deny contains msg if {
	cfg.require_watermark
	not ev.watermark
	msg := sprintf("%s requires an ownership watermark and the evidence has none", [input.environment])
}

deny contains msg if {
	some s in ev.supply_chain.base_model.scans
	count(s.issues) > 0
	msg := sprintf("base model %s: %s found %v", [ev.supply_chain.base_model.digest, s.scanner, s.issues])
}

deny contains msg if {
	ev.supply_chain.base_model.format == "pickle"
	count(object.get(ev, ["supply_chain", "base_model", "scans"], [])) == 0
	msg := sprintf("base model %s is a pickle that no scanner read", [ev.supply_chain.base_model.digest])
}

deny contains msg if {
	ev.supply_chain.base_model.format == "pickle"
	not cfg.allow_pickle_base_model
	msg := sprintf("base model %s is a pickle; %s allows only safetensors base models", [ev.supply_chain.base_model.digest, input.environment])
}

deny contains msg if {
	cfg.require_sbom
	not ev.supply_chain.sbom_digest
	msg := sprintf("%s requires an SBOM of the training environment and the evidence has none", [input.environment])
}

deny contains msg if {
	not decisions.allowed("data", ev.dataset_digest)
	msg := decisions.missing("data", ev.dataset_digest)
}

warn contains msg if {
	not ev.fairness
	msg := "no fairness measurement in the evidence"
}

warn contains msg if {
	not ev.robustness
	msg := "no robustness measurement in the evidence"
}

decision := {"allow": count(deny) == 0, "deny": deny, "warn": warn}

# Numbers in reasons: three decimals at most, rendered with %v so an integral value (0, 1) prints too.
r3(x) := round(x * 1000) / 1000
