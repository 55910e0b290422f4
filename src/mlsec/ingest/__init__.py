"""Ingest: load a dataset, validate it against its data contract, mask PII, fingerprint it."""
