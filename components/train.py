from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(dataset: Input[Dataset], contract: str, model_name: str, epochs: int,
          model: Output[Model], evidence: Output[Artifact], adversarial_epsilon: float = 0.0,
          dp_target_epsilon: float = 0.0, dp_delta: float = 1e-5, base_model: str = "",
          allow_pickle_base: bool = False) -> None:
    """Train the classifier (CUDA when the node has a GPU, MLSEC_TRAIN_DEVICE to choose) and measure it on a
    held-out split: accuracy, fairness, robustness, membership inference. Options: PGD adversarial training
    (adversarial_epsilon > 0), DP-SGD (dp_target_epsilon > 0), a scanned base model; a watermark when
    MLSEC_WATERMARK_KEY_FILE names a key file (a mounted Secret)."""
    from pathlib import Path

    from mlsec.train.task import run

    run(Path(dataset.path), contract, model_name, epochs, Path(model.path), Path(evidence.path),
        adversarial_epsilon=adversarial_epsilon, dp_target_epsilon=dp_target_epsilon, dp_delta=dp_delta,
        base_model=base_model, allow_pickle_base=allow_pickle_base)
