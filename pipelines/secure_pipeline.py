"""ingest → gate → train → gate → sign → gate → promote (promotion gate) → gate → serve.

Every gate returns "allow" or "deny"; each dsl.If has an Else that halts the run with the reasons
(kfp.local skips an If without Else silently, so the Else is what makes a deny stop the run).
"""

from kfp import dsl, kubernetes

from components._platform import gpu
from components.gate import gate, halt
from components.ingest import ingest
from components.promote import promote
from components.serve import serve
from components.sign import sign
from components.train import train
from mlsec.serve.deploy import DEPLOYER_TOKEN_DIR
from pipelines.resources import TRAIN, harden, sized


@dsl.pipeline(name="mlsec-secure-pipeline", description="Raw data to a served model through OPA-gated security stages")
def secure_pipeline(
    source: str = "",
    contract: str = "",
    model_name: str = "credit",
    environment: str = "",
    stage: str = "dev",
    author: str = "pipeline",
    epochs: int = 30,
) -> None:
    data = harden(ingest(source=source, contract=contract, model_name=model_name, stage=stage), data_source=True)
    data_gate = harden(gate(gate="data", environment=environment, evidence=data.outputs["evidence"]), gate_key=True)
    with dsl.If(data_gate.outputs["Output"] == "allow", name="data-allowed"):
        model = sized(gpu(harden(train(dataset=data.outputs["dataset"], contract=contract, model_name=model_name,
                                       epochs=epochs))), TRAIN)
        train_gate = harden(gate(gate="training", environment=environment, evidence=model.outputs["evidence"],
                                 history=data_gate.outputs["decisions"]), gate_key=True)
        with dsl.If(train_gate.outputs["Output"] == "allow", name="training-allowed"):
            signed = harden(sign(model=model.outputs["model"], data_evidence=data.outputs["evidence"],
                                 decisions=train_gate.outputs["decisions"], model_name=model_name,
                                 invocation=dsl.PIPELINE_JOB_NAME_PLACEHOLDER), signing_key=True)
            sign_gate = harden(gate(gate="signing", environment=environment, evidence=signed.outputs["evidence"],
                                    history=train_gate.outputs["decisions"]), public_key=True, gate_key=True)
            with dsl.If(sign_gate.outputs["Output"] == "allow", name="signing-allowed"):
                promoted = harden(promote(signed=signed.outputs["signed"], training_evidence=model.outputs["evidence"],
                                          data_evidence=data.outputs["evidence"], profile=data.outputs["profile"],
                                          decisions=sign_gate.outputs["decisions"], model_name=model_name,
                                          stage=stage, author=author, environment=environment),
                                  s3=True, public_key=True, gate_key=True)
                # The image's signature (mlsec.imagesig), checked before the deployment gate judges the release.
                kubernetes.use_config_map_as_volume(promoted, "mlsec-image-signature", mount_path="/etc/mlsec/image",
                                                    optional=True)
                deploy_gate = harden(gate(gate="deployment", environment=environment,
                                          evidence=promoted.outputs["release"],
                                          history=promoted.outputs["decisions_out"]), gate_key=True)
                with dsl.If(deploy_gate.outputs["Output"] == "allow", name="deployment-allowed"):
                    served = harden(serve(release=promoted.outputs["release"], decisions=deploy_gate.outputs["decisions"],
                                          admission=deploy_gate.outputs["admission"]), s3=True, public_key=True)
                    # The only task holding the deployer's token (manifests/deployer.yaml).
                    kubernetes.use_secret_as_volume(served, "mlsec-deployer-token", mount_path=DEPLOYER_TOKEN_DIR)
                with dsl.Else(name="deployment-denied"):
                    harden(halt(decision=deploy_gate.outputs["decision"]))
            with dsl.Else(name="signing-denied"):
                harden(halt(decision=sign_gate.outputs["decision"]))
        with dsl.Else(name="training-denied"):
            harden(halt(decision=train_gate.outputs["decision"]))
    with dsl.Else(name="data-denied"):
        harden(halt(decision=data_gate.outputs["decision"]))
