"""Sign: OpenSSF model-signing over the model directory, plus a signed provenance attestation."""
