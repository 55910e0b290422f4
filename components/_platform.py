"""Cluster-side task settings (kfp-kubernetes). kfp.local ignores them, so local runs are unaffected.

Configuration reaches tasks from the `mlsec-config` ConfigMap and secrets from Secrets, never as
literals compiled into the pipeline.
"""

from kfp import kubernetes
from kfp.dsl import PipelineTask

UID = 10001
CONFIG_KEYS = ["MLSEC_ENV", "MLSEC_DEPLOY_TARGET", "MLSEC_S3_ENDPOINT", "MLSEC_S3_BUCKET", "MLSEC_OPA_URL",
               "MLSEC_IMAGE", "MLSEC_NAMESPACE", "MLSEC_GIT_COMMIT", "MLSEC_KEY_DIR", "MLSEC_GATE_KEY",
               "MLSEC_AUDIT_KEY", "MLSEC_GATE_TRUST_DIR", "MLSEC_DATA_SOURCE_PREFIX",
               "MLSEC_DATA_S3_CREDENTIALS_DIR", "MLSEC_AUDIT_S3_CREDENTIALS_DIR", "MLSEC_PII_TOKEN_KEY_FILE",
               "MLSEC_REFERENCE_S3_CREDENTIALS_DIR", "MLSEC_SIGNING_TRUST"]
SIGNING_DIR = "/etc/mlsec/signing"  # MLSEC_KEY_DIR in the ConfigMap points here
# MLSEC_SIGNING_TRUST: after a key rotation, the retired keys that verify until a date (mlsec.sign.keyring)
SIGNING_TRUST_DIR = "/etc/mlsec/signing-trust"
GATE_KEY_DIR = "/etc/mlsec/gate-key"  # MLSEC_GATE_KEY in the ConfigMap: GATE_KEY_DIR/gate.key
GATE_TRUST_DIR = "/etc/mlsec/gate-trust"  # MLSEC_GATE_TRUST_DIR: <env>.pub for every environment
DATA_S3_DIR = "/etc/mlsec/s3-data"  # MLSEC_DATA_S3_CREDENTIALS_DIR: the read-only identity ingest reads with
PII_TOKEN_DIR = "/etc/mlsec/pii-token"  # MLSEC_PII_TOKEN_KEY_FILE: PII_TOKEN_DIR/key, the HMAC key of `tokenize`
AUDIT_S3_DIR = "/etc/mlsec/s3-audit"  # MLSEC_AUDIT_S3_CREDENTIALS_DIR: writes <bucket>/audit/ and nothing else
# MLSEC_REFERENCE_S3_CREDENTIALS_DIR: reads the registry's aliases, promotion records and reference records only
REFERENCE_S3_DIR = "/etc/mlsec/s3-reference"


def harden(task: PipelineTask, *, s3: bool = False, signing_key: bool = False, public_key: bool = False,
           gate_key: bool = False, data_source: bool = False) -> PipelineTask:
    kubernetes.set_security_context(task, run_as_user=UID, run_as_group=UID, run_as_non_root=True)
    kubernetes.use_config_map_as_env(task, "mlsec-config", {k: k for k in CONFIG_KEYS})
    task.set_caching_options(False)  # every run must produce fresh evidence and decisions
    if s3:
        kubernetes.use_secret_as_env(task, "mlsec-s3", {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
                                                       "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"})
    if data_source:  # ingest parses untrusted files: it holds no write credential, only the data reader
        kubernetes.use_secret_as_volume(task, "mlsec-s3-data", mount_path=DATA_S3_DIR)
        # and the registry reader of the signed reference profile the next dataset is screened against
        kubernetes.use_secret_as_volume(task, "mlsec-s3-reference", mount_path=REFERENCE_S3_DIR)
        # The key of contracts that tokenize PII (mlsec.ingest.pii.Tokenizer); a contract without one needs none.
        kubernetes.use_secret_as_volume(task, "mlsec-pii-token", mount_path=PII_TOKEN_DIR, optional=True)
    if signing_key or public_key:
        secret = "mlsec-signing-key" if signing_key else "mlsec-signing-pub"
        kubernetes.use_secret_as_volume(task, secret, mount_path=SIGNING_DIR)
        # Read-only, and absent until the first rotation (no file: the configured key alone).
        kubernetes.use_config_map_as_volume(task, "mlsec-signing-trust", mount_path=SIGNING_TRUST_DIR, optional=True)
    # Every task verifies signed decisions; only gate tasks (and promote) hold the environment's gate key,
    # a Secret of the namespace the environment's runs use, apart from the model-signing key.
    kubernetes.use_config_map_as_volume(task, "mlsec-gate-trust", mount_path=GATE_TRUST_DIR)
    if gate_key:  # whoever signs decisions appends them to the shared audit log, with a key for that alone
        kubernetes.use_secret_as_volume(task, "mlsec-gate-key", mount_path=GATE_KEY_DIR)
        kubernetes.use_secret_as_volume(task, "mlsec-s3-audit", mount_path=AUDIT_S3_DIR)
    return task


def gpu(task: PipelineTask, accelerator: str = "nvidia.com/gpu") -> PipelineTask:
    task.set_accelerator_type(accelerator).set_accelerator_limit(1)
    kubernetes.add_toleration(task, key=accelerator, operator="Exists", effect="NoSchedule")
    kubernetes.add_node_selector(task, label_key="nvidia.com/gpu.present", label_value="true")
    return task
