# Signing gate: the model is signed by a trusted key, the signature covers exactly this model,
# nothing in it can execute code on load, and its provenance attestation is bound to it.
package mlsec.gates.signing

import data.mlsec.lib.config

cfg := data.data[input.environment].signing

# Every key this policy reads from cfg, with its type (see lib/config.rego).
config_types := {"trust_any_signer": "boolean", "allowed_signers": "array", "unsafe_extensions": "array",
	"allowed_extensions": "array"}

config_problems := config.problems([input.environment, "signing"], cfg, config_types)

ev := input.evidence

deny contains msg if {
	not ev.kind == "mlsec.evidence.signing/v1"
	msg := sprintf("evidence kind %v is not mlsec.evidence.signing/v1", [object.get(input, ["evidence", "kind"], null)])
}

deny contains msg if {
	not cfg
	msg := sprintf("no signing policy for environment %q", [input.environment])
}

deny contains msg if {
	some msg in config_problems
}

deny contains msg if {
	not ev.signature.verified
	msg := "model signature did not verify"
}

deny contains msg if {
	ev.signature.signed_digest != ev.subject.digest
	msg := sprintf("signature covers %s, not the model digest %s", [ev.signature.signed_digest, ev.subject.digest])
}

deny contains msg if {
	not cfg.trust_any_signer
	not ev.signature.signer in cfg.allowed_signers
	msg := sprintf("signer %s is not on the %s allow list (policies/data/%s.json: signing.allowed_signers)", [ev.signature.signer, input.environment, input.environment])
}

deny contains msg if {
	some f in ev.files
	some ext in cfg.unsafe_extensions
	endswith(lower(f), ext)
	msg := sprintf("unsafe file %q in the model (%s can run code when loaded)", [f, ext])
}

# An allow list as well: a pickle renamed to weights.dat passes any list of known-bad extensions.
deny contains msg if {
	some f in ev.files
	not allowed_file(f)
	msg := sprintf("file %q is not an allowed model file type (%s)", [f, concat(", ", cfg.allowed_extensions)])
}

allowed_file(f) if {
	some ext in cfg.allowed_extensions
	endswith(lower(f), ext)
}

deny contains msg if {
	not ev.attestation.verified
	msg := "provenance attestation did not verify"
}

deny contains msg if {
	ev.attestation.subject_digest != ev.subject.digest
	msg := sprintf("attestation is about %s, not this model %s", [ev.attestation.subject_digest, ev.subject.digest])
}

deny contains msg if {
	count(ev.attestation.decision_digests) < count(input.decisions)
	msg := sprintf("attestation records %d gate decisions but %d were taken", [count(ev.attestation.decision_digests), count(input.decisions)])
}

warn contains msg if {
	cfg.trust_any_signer
	not ev.signature.signer in cfg.allowed_signers
	msg := sprintf("signer %s accepted only because %s trusts any signer", [ev.signature.signer, input.environment])
}

decision := {"allow": count(deny) == 0, "deny": deny, "warn": warn}
