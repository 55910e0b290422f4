"""Gates: evidence in, OPA decision out, every decision hash-chained into the audit log."""

from mlsec.gates.decision import Decision, GateDenied
from mlsec.gates.gate import GATES, evaluate

__all__ = ["GATES", "Decision", "GateDenied", "evaluate"]
