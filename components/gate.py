from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def gate(
    gate: str,
    environment: str,
    evidence: Input[Artifact],
    decision: Output[Artifact],
    decisions: Output[Artifact],
    admission: Output[Artifact],
    history: Optional[Input[Artifact]] = None,
) -> str:
    """Ask OPA about a stage's evidence; returns "allow" or "deny" (fail closed). An allowed cluster
    deployment also gets the admission token the cluster checks (empty otherwise)."""
    from pathlib import Path

    from mlsec.gates.task import run_gate

    return run_gate(gate, Path(evidence.path), Path(history.path) if history else None,
                    Path(decision.path), Path(decisions.path), environment or None, Path(admission.path))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def halt(decision: Input[Artifact]) -> None:
    """Runs when a gate denied: fails the run with the gate's reasons."""
    from pathlib import Path

    from mlsec.gates.task import halt as stop

    stop(Path(decision.path))
