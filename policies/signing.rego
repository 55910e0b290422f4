# Signing gate: the model is signed by a trusted key, the signature covers exactly this model,
# nothing in it can execute code on load, its provenance attestation is bound to it, and it is the model
# the training gate allowed, trained on a dataset whose signed provenance it carries and the data gate allowed.
package mlsec.gates.signing

import data.mlsec.lib.config
import data.mlsec.lib.decisions

cfg := data.data[input.environment].signing

# Every key this policy reads from cfg, with its type (see lib/config.rego).
config_types := {"trust_any_signer": "boolean", "allowed_signers": "array", "unsafe_extensions": "array",
	"allowed_formats": "array", "require_dataset_provenance": "boolean"}

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

# What each file is, as the sign stage read it from its bytes: a pickle renamed weights.dat or
# config.json is still a pickle, and only formats that cannot run code when loaded are allowed.
deny contains msg if {
	some f, format in ev.formats
	not format in cfg.allowed_formats
	msg := sprintf("file %q is %s, not an allowed model format (%s)", [f, format, concat(", ", cfg.allowed_formats)])
}

deny contains msg if {
	some f in ev.files
	not ev.formats[f]
	msg := sprintf("file %q has no format check in the evidence", [f])
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

deny contains msg if {
	not decisions.allowed("training", ev.subject.digest)
	msg := decisions.missing("training", ev.subject.digest)
}

# The dataset provenance (mlsec.ingest.provenance) the model's provenance carries, as the sign stage checked
# it: a missing one is denied where the environment requires it; one carried must verify with the trusted
# identity, be about the dataset the model's provenance names, and that dataset must be one the data gate
# allowed here, whatever the toggle.
dp := ev.dataset_provenance

deny contains msg if {
	cfg.require_dataset_provenance
	not dp.present
	msg := sprintf("the model's provenance carries no dataset provenance (%s), which %s requires (policies/data/%s.json: signing.require_dataset_provenance)", [object.get(ev, ["dataset_provenance", "problem"], "the evidence has no dataset_provenance"), input.environment, input.environment])
}

deny contains msg if {
	dp.present
	not dp.verified
	msg := sprintf("the dataset provenance in the model's provenance did not verify: %s", [dp.problem])
}

deny contains msg if {
	dp.verified
	not dp.matches_dataset
	msg := sprintf("the dataset provenance is about dataset %s, not the dataset %s the model's provenance names", [dp.dataset_digest, ev.attestation.dataset_digest])
}

deny contains msg if {
	dp.verified
	not decisions.allowed("data", dp.dataset_digest)
	msg := sprintf("dataset provenance: %s", [decisions.missing("data", dp.dataset_digest)])
}

warn contains msg if {
	not cfg.require_dataset_provenance
	not dp.present
	msg := sprintf("the model's provenance carries no dataset provenance (%s): accepted only because %s does not require one", [object.get(ev, ["dataset_provenance", "problem"], "the evidence has no dataset_provenance"), input.environment])
}

warn contains msg if {
	cfg.trust_any_signer
	not ev.signature.signer in cfg.allowed_signers
	msg := sprintf("signer %s accepted only because %s trusts any signer", [ev.signature.signer, input.environment])
}

decision := {"allow": count(deny) == 0, "deny": deny, "warn": warn}
