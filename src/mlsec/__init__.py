"""mlsec: an OPA-gated, signed evidence chain from raw data to a served model.

Kept import-light on purpose: every KFP task imports this package, and the gates must not pay
for torch or great-expectations.
"""

__version__ = "0.1.0"
