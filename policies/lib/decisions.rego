# The earlier gate decisions a gate relies on (input.decisions). One counts only if it allowed this exact
# subject under this environment's policy: a decision taken under another environment (dev, say) was
# judged by that environment's thresholds and allow lists, so it does not carry over to prod.
package mlsec.lib.decisions

allowed(gate, subject) if {
	some d in input.decisions
	d.gate == gate
	d.allow == true
	d.subject == subject
	d.environment == input.environment
}

# The deny reason when allowed(gate, subject) does not hold: says when the decision exists, but under
# another environment's policy, so the fix (run the gate again here) is in the message.
missing(gate, subject) := msg if {
	elsewhere := {d.environment |
		some d in input.decisions
		d.gate == gate
		d.allow == true
		d.subject == subject
	}
	count(elsewhere) > 0
	msg := sprintf("the %s-gate decision for %s was taken under the %s policy, not %s (a decision counts only in the environment that took it)", [gate, subject, concat(", ", sort(elsewhere)), input.environment])
} else := sprintf("no allowing %s-gate decision for %s", [gate, subject])
