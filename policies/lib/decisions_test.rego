package mlsec.lib.decisions_test

import data.mlsec.lib.decisions

fact(gate, allow, subject, env) := {"gate": gate, "environment": env, "allow": allow, "subject": subject, "policy_sha256": "p"}

test_allowing_decision_for_subject_and_environment_counts if {
	decisions.allowed("training", "m1") with input as {"environment": "prod", "decisions": [fact("training", true, "m1", "prod")]}
}

test_other_subject_does_not_count if {
	not decisions.allowed("training", "m1") with input as {"environment": "prod", "decisions": [fact("training", true, "m2", "prod")]}
	decisions.missing("training", "m1") == "no allowing training-gate decision for m1" with input as {"environment": "prod", "decisions": [fact("training", true, "m2", "prod")]}
}

test_other_gate_does_not_count if {
	not decisions.allowed("training", "m1") with input as {"environment": "prod", "decisions": [fact("data", true, "m1", "prod")]}
}

test_deny_does_not_count if {
	not decisions.allowed("training", "m1") with input as {"environment": "prod", "decisions": [fact("training", false, "m1", "prod")]}
}

# Only the boolean true allows: a policy input with "allow": "yes" is not an allowing decision.
test_truthy_allow_does_not_count if {
	not decisions.allowed("training", "m1") with input as {"environment": "prod", "decisions": [fact("training", "yes", "m1", "prod")]}
}

test_decision_under_another_environment_does_not_count if {
	inp := {"environment": "prod", "decisions": [fact("training", true, "m1", "dev"), fact("training", true, "m1", "staging")]}
	not decisions.allowed("training", "m1") with input as inp
	decisions.missing("training", "m1") == "the training-gate decision for m1 was taken under the dev, staging policy, not prod (a decision counts only in the environment that took it)" with input as inp
}

test_no_decisions_at_all if {
	not decisions.allowed("data", "d1") with input as {"environment": "dev", "decisions": []}
	decisions.missing("data", "d1") == "no allowing data-gate decision for d1" with input as {"environment": "dev"}
}
