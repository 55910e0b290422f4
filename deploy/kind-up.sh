#!/usr/bin/env bash
# Bring up the cluster path on a laptop: kind + Calico + Kubeflow Pipelines (standalone) + Gatekeeper + mlsec.
# Needs: docker, kind, kubectl, helm, openssl and network access to the image registries. It has NEVER run in
# this repository's CI or on its development machine (no Docker daemon, no kind there); README "Cluster path"
# shows what it is expected to print. `deploy/kind-up.sh --dry-run` prints every step without running any.
#
# KFP backend: the release the SDK in .venv comes from (kfp 2.17.3 -> KFP_VERSION=2.17.3). SDK and backend
# versions move together since KFP 2.14, and the compiled IR uses kfp-kubernetes fields (the tasks'
# securityContext from set_security_context, optional ConfigMap volumes) that only a backend driver of the
# same release applies; an older driver drops or rejects them, and the tasks would then run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=false
case "${1:-}" in
  --dry-run) DRY=true ;;
  "") ;;
  *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac

VENV=.venv/bin
KFP_VERSION="${KFP_VERSION:-$($VENV/python -c 'import kfp; print(kfp.__version__)')}"
CALICO_VERSION="${CALICO_VERSION:-v3.28.0}"
GATEKEEPER_VERSION="${GATEKEEPER_VERSION:-v3.18.2}"
OPA_IMAGE="${OPA_IMAGE:-openpolicyagent/opa:1.2.0-static}"
WEED_IMAGE="${WEED_IMAGE:-chrislusf/seaweedfs:4.48}"
REGISTRY_IMAGE="${REGISTRY_IMAGE:-registry:2.8.3}"
# The local registry the kind nodes pull from (kind-config.yaml's containerd certs.d): the image is pushed
# there and named by the digest that registry serves, the only kind of digest a node can pull by.
REGISTRY=localhost:5001
IMAGE="$REGISTRY/mlsec:$(git rev-parse --short HEAD)"

# run: every step goes through here; --dry-run prints it instead (secrets are never generated in a dry run).
run() {
  if $DRY; then printf '+'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}
# Applies generated YAML from stdin-producing commands without writing it anywhere.
apply_generated() { "$@" --dry-run=client -o yaml | kubectl apply -f -; }

run kind get clusters
if $DRY || ! kind get clusters | grep -qx mlsec; then run kind create cluster --config kind-config.yaml; fi
run kubectl apply -f "https://raw.githubusercontent.com/projectcalico/calico/${CALICO_VERSION}/manifests/calico.yaml"
run kubectl -n kube-system rollout status daemonset/calico-node --timeout=300s

# The registry container, on kind's network, and each node told where localhost:5001 really is.
registry_up() {
  docker inspect kind-registry >/dev/null 2>&1 || \
    docker run -d --restart=always -p "127.0.0.1:5001:5000" --network bridge --name kind-registry "$REGISTRY_IMAGE"
  docker network connect kind kind-registry 2>/dev/null || true
  for node in $(kind get nodes --name mlsec); do
    docker exec "$node" mkdir -p "/etc/containerd/certs.d/$REGISTRY"
    printf '[host."http://kind-registry:5000"]\n' | docker exec -i "$node" cp /dev/stdin "/etc/containerd/certs.d/$REGISTRY/hosts.toml"
  done
}
run registry_up

run kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=${KFP_VERSION}"
run kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
run kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=${KFP_VERSION}"
run kubectl apply -f "https://raw.githubusercontent.com/open-policy-agent/gatekeeper/${GATEKEEPER_VERSION}/deploy/gatekeeper.yaml"

# Build, push to the local registry, and pin by the digest the registry serves (not a local image ID).
run docker build -t "$IMAGE" .
run docker push "$IMAGE"
pushed() { docker image inspect --format '{{index .RepoDigests 0}}' "$1"; }
if $DRY; then MLSEC_IMAGE_PINNED="$REGISTRY/mlsec@sha256:<digest the registry serves>"; else MLSEC_IMAGE_PINNED="$(pushed "$IMAGE")"; fi
run docker pull "$OPA_IMAGE"
run docker pull "$WEED_IMAGE"
run kind load docker-image "$OPA_IMAGE" "$WEED_IMAGE" --name mlsec
digest() { if $DRY; then echo "${1%%:*}@sha256:<digest>"; else docker image inspect --format '{{index .RepoDigests 0}}' "$1"; fi; }

run kubectl apply -f manifests/namespaces.yaml
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT

# Secrets are generated here and go straight into the cluster; nothing is written to the repo or printed.
# S3 identities, each able to do only its job (src/mlsec/registry/seaweed.py ACTIONS, scoped to the bucket):
# the pipeline writes (kubeflow: mlsec-s3), the server reads (mlsec-serving: mlsec-s3-reader), ingest reads
# datasets (mlsec-s3-data) and reads the registry's reference profiles, aliases and promotion records only
# (mlsec-s3-reference), gates append to the audit log under $BUCKET/audit/ only (mlsec-s3-audit), and the
# admin sets up the bucket once, below; its key stays in mlsec-system and no workload mounts it.
BUCKET=mlsec-models
DATA_BUCKET=mlsec-data  # where datasets are read from (MLSEC_DATA_SOURCE_PREFIX in manifests/config.yaml)
token_key() { if $DRY; then echo '<48 random bytes, base64>'; else openssl rand -base64 48 | tr -d '\n'; fi; }
pair() {
  if $DRY; then echo "<access-key> <secret-key>"; return; fi
  echo "MLSEC$(openssl rand -hex 8 | tr a-f A-F) $(openssl rand -base64 30 | tr -d '/+=')"
}
read -r admin_access admin_secret <<<"$(pair)"
read -r writer_access writer_secret <<<"$(pair)"
read -r reader_access reader_secret <<<"$(pair)"
read -r data_access data_secret <<<"$(pair)"
read -r audit_access audit_secret <<<"$(pair)"
read -r reference_access reference_secret <<<"$(pair)"
cat > "$tmp/s3.json" <<JSON
{"identities":[
 {"name":"admin","credentials":[{"accessKey":"$admin_access","secretKey":"$admin_secret"}],"actions":["Admin","Read","Write","List","Tagging"]},
 {"name":"pipeline","credentials":[{"accessKey":"$writer_access","secretKey":"$writer_secret"}],
  "actions":["Read:$BUCKET","Write:$BUCKET","List:$BUCKET","Tagging:$BUCKET","GetObjectRetention:$BUCKET","PutObjectRetention:$BUCKET","GetBucketObjectLockConfiguration:$BUCKET"]},
 {"name":"server","credentials":[{"accessKey":"$reader_access","secretKey":"$reader_secret"}],
  "actions":["Read:$BUCKET","List:$BUCKET","GetBucketObjectLockConfiguration:$BUCKET"]},
 {"name":"data","credentials":[{"accessKey":"$data_access","secretKey":"$data_secret"}],
  "actions":["Read:$DATA_BUCKET","List:$DATA_BUCKET"]},
 {"name":"audit","credentials":[{"accessKey":"$audit_access","secretKey":"$audit_secret"}],
  "actions":["Read:$BUCKET/audit/*","Write:$BUCKET/audit/*","GetObjectRetention:$BUCKET/audit/*","PutObjectRetention:$BUCKET/audit/*","List:$BUCKET"]},
 {"name":"reference","credentials":[{"accessKey":"$reference_access","secretKey":"$reference_secret"}],
  "actions":["Read:$BUCKET/aliases/*","Read:$BUCKET/promotions/*","Read:$BUCKET/models/*/reference/*","List:$BUCKET"]}]}
JSON
run apply_generated kubectl -n mlsec-system create secret generic mlsec-s3-config --from-file=s3.json="$tmp/s3.json"
s3_secret() { apply_generated kubectl -n "$1" create secret generic "$2" --from-literal=AWS_ACCESS_KEY_ID="$3" \
  --from-literal=AWS_SECRET_ACCESS_KEY="$4"; }
run s3_secret kubeflow mlsec-s3 "$writer_access" "$writer_secret"
run s3_secret mlsec-serving mlsec-s3-reader "$reader_access" "$reader_secret"
run s3_secret kubeflow mlsec-s3-data "$data_access" "$data_secret"
run s3_secret kubeflow mlsec-s3-audit "$audit_access" "$audit_secret"  # gate tasks: the audit log only
run s3_secret kubeflow mlsec-s3-reference "$reference_access" "$reference_secret"  # ingest: the signed reference only
# The HMAC key of contracts that tokenize PII (ingest only).
run apply_generated kubectl -n kubeflow create secret generic mlsec-pii-token --from-literal=key="$(token_key)"
run s3_secret mlsec-system mlsec-s3-admin "$admin_access" "$admin_secret"
run kubectl -n mlsec-serving delete secret mlsec-s3 --ignore-not-found  # the shared key of older installs
run $VENV/mlsec keys create --dir "$tmp/keys"
run apply_generated kubectl -n kubeflow create secret generic mlsec-signing-key --from-file="$tmp/keys/signing.key" \
  --from-file="$tmp/keys/signing.pub"
for ns in kubeflow mlsec-serving; do
  run apply_generated kubectl -n "$ns" create secret generic mlsec-signing-pub --from-file="$tmp/keys/signing.pub"
done
# The image's SBOM and its signature with the model signing key over the pushed digest: the serve stage checks
# it (ConfigMap mlsec-image-signature) and the deployment gate refuses an image whose signature did not verify.
export MLSEC_CONTAINER_ENGINE=docker  # the image is in Docker's store here, not podman's
run $VENV/python -m mlsec.imagesig sbom "$MLSEC_IMAGE_PINNED" "$tmp/image.cdx.json"
run $VENV/python -m mlsec.imagesig sign "$MLSEC_IMAGE_PINNED" "$tmp/image.cdx.json" "$tmp/keys/signing.key" "$tmp/image.sig.json"
run apply_generated kubectl -n kubeflow create configmap mlsec-image-signature --from-file=image.sig.json="$tmp/image.sig.json"
# Gate keys sign every decision (docs/trust.md): one per environment, apart from the model key. This kind
# cluster runs the dev environment; its pipeline namespace holds dev's private key only, and every reader
# trusts the public keys of all environments.
for env in dev staging prod audit; do run $VENV/mlsec keys gate-key "$env" --dir "$tmp/gates"; done
run apply_generated kubectl -n kubeflow create secret generic mlsec-gate-key --from-file=gate.key="$tmp/gates/dev.key" \
  --from-file=audit.key="$tmp/gates/audit.key"
for ns in kubeflow mlsec-serving; do
  run apply_generated kubectl -n "$ns" create configmap mlsec-gate-trust --from-file="$tmp/gates/dev.pub" \
    --from-file="$tmp/gates/staging.pub" --from-file="$tmp/gates/prod.pub" --from-file="$tmp/gates/audit.pub"
done

# The policy bundle is signed; OPA verifies it with the public key from a Secret, so the identity that
# rolls out bundles (update on the ConfigMap) cannot change the gates without the policy signing key.
# A real cluster keeps this key with the platform team, not in a temp dir.
run $VENV/mlsec keys create --dir "$tmp/policy-key"
run apply_generated kubectl -n mlsec-system create secret generic mlsec-policy-bundle-key \
  --from-file=policy-bundle.pub="$tmp/policy-key/signing.pub"
run $VENV/mlsec policy bundle -o "$tmp/bundle.tar.gz" --signing-key "$tmp/policy-key/signing.key"
run $VENV/mlsec policy verify-bundle "$tmp/bundle.tar.gz" --public-key "$tmp/policy-key/signing.pub"
run apply_generated kubectl -n mlsec-system create configmap mlsec-policy-bundle --from-file=bundle.tar.gz="$tmp/bundle.tar.gz"

pin() { sed "s#$1@sha256:0\{64\}#$2#" "$3" | kubectl apply -f -; }
run pin openpolicyagent/opa "$(digest "$OPA_IMAGE")" manifests/opa.yaml
run pin chrislusf/seaweedfs "$(digest "$WEED_IMAGE")" manifests/seaweedfs.yaml
config() {
  sed "s#MLSEC_IMAGE: \"\".*#MLSEC_IMAGE: \"$1\"#; s#MLSEC_GIT_COMMIT: \"\"#MLSEC_GIT_COMMIT: \"$(git rev-parse HEAD)\"#" \
    manifests/config.yaml | kubectl apply -f -
}
run config "$MLSEC_IMAGE_PINNED"
run kubectl apply -f manifests/networkpolicies.yaml
# The serve task's own account (its token reaches the serve task alone) and the admission policy, enforced
# once the platform team's first install below is in: from then on a serving workload or NetworkPolicy in
# mlsec-serving is admitted only with the admission token of an allowing deployment-gate decision, which the
# serve task stamps on exactly the objects the gate judged.
run kubectl apply -f manifests/deployer.yaml
run kubectl -n gatekeeper-system rollout status deploy/gatekeeper-controller-manager --timeout=300s
constraint() {
  $VENV/python - "$tmp/gates/dev.pub" <<'PY' | kubectl apply -f -
import sys, yaml
docs = list(yaml.safe_load_all(open("manifests/admission.yaml")))
pem = open(sys.argv[1]).read()
for d in docs:
    if d["kind"] == "MlsecGateAllowed":
        d["spec"]["parameters"] = {"environment": "dev", "gatePublicKeys": [pem]}
print(yaml.safe_dump_all(docs))
PY
}

# Bucket setup, the admin identity's only use: the bucket with object lock, through a port-forward from here.
run kubectl -n mlsec-system rollout status deploy/seaweedfs --timeout=300s
bucket() {
  kubectl -n mlsec-system port-forward svc/seaweedfs 18333:8333 >/dev/null & local pf=$!
  sleep 3
  MLSEC_S3_ENDPOINT=http://127.0.0.1:18333 AWS_ACCESS_KEY_ID="$admin_access" AWS_SECRET_ACCESS_KEY="$admin_secret" \
    $VENV/python -c "from mlsec.registry.s3 import client_from_env; from mlsec.registry.store import Registry; \
Registry(client_from_env(), '$BUCKET').ensure_bucket(create=True)"
  kill "$pf"
}
run bucket
unset admin_access admin_secret

# The serving release: installed once by the platform team; each pipeline run then only patches its
# workload (the chart's Role allows mlsec-deployer nothing more). Clients get keys from `mlsec keys api-key`.
run $VENV/mlsec keys api-key platform-smoke-test --file "$tmp/api-keys.json"
run apply_generated kubectl -n mlsec-serving create secret generic mlsec-api-keys --from-file=keys.json="$tmp/api-keys.json"
run helm upgrade --install credit-dev helm/mlsec -n mlsec-serving -f helm/mlsec/values-dev.yaml \
  --set image.repository="${MLSEC_IMAGE_PINNED%@*}" --set image.digest="${MLSEC_IMAGE_PINNED#*@}" \
  --set s3.endpoint=http://seaweedfs.mlsec-system.svc:8333
run constraint
run kubectl -n kubeflow rollout status deploy/ml-pipeline --timeout=600s

echo "Cluster ready (KFP ${KFP_VERSION}, image ${MLSEC_IMAGE_PINNED})."
echo "In another shell: kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80"
echo "Then: MLSEC_IMAGE=${MLSEC_IMAGE_PINNED} $VENV/mlsec submit --host http://127.0.0.1:8080"
