from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(dataset: Input[Dataset], contract: str, model_name: str, epochs: int,
          model: Output[Model], evidence: Output[Artifact]) -> None:
    """Train the classifier (CUDA when the node has a GPU) and measure it on a held-out split."""
    from pathlib import Path

    from mlsec.train.task import run

    run(Path(dataset.path), contract, model_name, epochs, Path(model.path), Path(evidence.path))
