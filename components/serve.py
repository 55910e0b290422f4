from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def serve(release: Input[Artifact], decisions: Input[Artifact], admission: Input[Artifact],
          endpoint: Output[Artifact]) -> None:
    """Deploy exactly the objects the deployment gate allowed: a loopback server locally, a cluster apply otherwise."""
    from pathlib import Path

    from mlsec.serve.task import run

    run(Path(release.path), Path(decisions.path), Path(endpoint.path), Path(admission.path))
