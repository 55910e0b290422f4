#!/usr/bin/env bash
# Bring up the cluster path on a laptop: kind + Calico + Kubeflow Pipelines (standalone) + mlsec.
# Needs: docker, kind, kubectl, helm, and network access to the image registries. NOT run in this repo's CI
# (no Docker daemon or Kubernetes API there); see README "What runs where".
set -euo pipefail
cd "$(dirname "$0")/.."

KFP_VERSION="${KFP_VERSION:-2.5.0}"
CALICO_VERSION="${CALICO_VERSION:-v3.28.0}"
OPA_IMAGE="${OPA_IMAGE:-openpolicyagent/opa:1.2.0-static}"
WEED_IMAGE="${WEED_IMAGE:-chrislusf/seaweedfs:4.48}"
IMAGE="${IMAGE:-mlsec:dev}"
VENV=.venv/bin

kind get clusters | grep -qx mlsec || kind create cluster --config kind-config.yaml
kubectl apply -f "https://raw.githubusercontent.com/projectcalico/calico/${CALICO_VERSION}/manifests/calico.yaml"
kubectl -n kube-system rollout status daemonset/calico-node --timeout=300s

kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=${KFP_VERSION}"
kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=${KFP_VERSION}"

# Build the image, load it into kind, and pin everything by digest.
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name mlsec
docker pull "$OPA_IMAGE" && docker pull "$WEED_IMAGE"
kind load docker-image "$OPA_IMAGE" "$WEED_IMAGE" --name mlsec
# repo@sha256:… for pulled images; a locally built image has no registry digest, so use its ID.
digest() { docker image inspect --format '{{index .RepoDigests 0}}' "$1" 2>/dev/null \
  || echo "${1%%:*}@$(docker image inspect --format '{{.Id}}' "$1")"; }
MLSEC_IMAGE_PINNED="$(digest "$IMAGE")"

kubectl apply -f manifests/namespaces.yaml
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT

# Secrets are generated here and go straight into the cluster; nothing is written to the repo.
# S3 identities, each able to do only its job (src/mlsec/registry/seaweed.py ACTIONS, scoped to the bucket):
# the pipeline writes (kubeflow: mlsec-s3), the server reads (mlsec-serving: mlsec-s3-reader), ingest reads
# datasets (mlsec-s3-data), gates append to the audit log under $BUCKET/audit/ only (mlsec-s3-audit), and the
# admin sets up the bucket once, below; its key stays in mlsec-system and no workload mounts it.
BUCKET=mlsec-models
DATA_BUCKET=mlsec-data  # where datasets are read from (MLSEC_DATA_SOURCE_PREFIX in manifests/config.yaml)
pair() { echo "MLSEC$(openssl rand -hex 8 | tr a-f A-F) $(openssl rand -base64 30 | tr -d '/+=')"; }
read -r admin_access admin_secret <<<"$(pair)"
read -r writer_access writer_secret <<<"$(pair)"
read -r reader_access reader_secret <<<"$(pair)"
read -r data_access data_secret <<<"$(pair)"
read -r audit_access audit_secret <<<"$(pair)"
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
  "actions":["Read:$BUCKET/audit/*","Write:$BUCKET/audit/*","GetObjectRetention:$BUCKET/audit/*","PutObjectRetention:$BUCKET/audit/*","List:$BUCKET"]}]}
JSON
kubectl -n mlsec-system create secret generic mlsec-s3-config --from-file=s3.json="$tmp/s3.json" --dry-run=client -o yaml | kubectl apply -f -
s3_secret() { kubectl -n "$1" create secret generic "$2" --from-literal=AWS_ACCESS_KEY_ID="$3" \
  --from-literal=AWS_SECRET_ACCESS_KEY="$4" --dry-run=client -o yaml | kubectl apply -f -; }
s3_secret kubeflow mlsec-s3 "$writer_access" "$writer_secret"
s3_secret mlsec-serving mlsec-s3-reader "$reader_access" "$reader_secret"
s3_secret kubeflow mlsec-s3-data "$data_access" "$data_secret"
s3_secret kubeflow mlsec-s3-audit "$audit_access" "$audit_secret"  # gate tasks: the audit log only
s3_secret mlsec-system mlsec-s3-admin "$admin_access" "$admin_secret"
kubectl -n mlsec-serving delete secret mlsec-s3 --ignore-not-found  # the shared key of older installs
$VENV/mlsec keys create --dir "$tmp/keys"
kubectl -n kubeflow create secret generic mlsec-signing-key --from-file="$tmp/keys/signing.key" \
  --from-file="$tmp/keys/signing.pub" --dry-run=client -o yaml | kubectl apply -f -
for ns in kubeflow mlsec-serving; do
  kubectl -n "$ns" create secret generic mlsec-signing-pub --from-file="$tmp/keys/signing.pub" \
    --dry-run=client -o yaml | kubectl apply -f -
done
# Gate keys sign every decision (docs/trust.md): one per environment, apart from the model key. This kind
# cluster runs the dev environment; its pipeline namespace holds dev's private key only, and every reader
# trusts the public keys of all environments.
for env in dev staging prod audit; do $VENV/mlsec keys gate-key "$env" --dir "$tmp/gates"; done
kubectl -n kubeflow create secret generic mlsec-gate-key --from-file=gate.key="$tmp/gates/dev.key" \
  --from-file=audit.key="$tmp/gates/audit.key" --dry-run=client -o yaml | kubectl apply -f -
for ns in kubeflow mlsec-serving; do
  kubectl -n "$ns" create configmap mlsec-gate-trust --from-file="$tmp/gates/dev.pub" --from-file="$tmp/gates/staging.pub" \
    --from-file="$tmp/gates/prod.pub" --from-file="$tmp/gates/audit.pub" --dry-run=client -o yaml | kubectl apply -f -
done

# The policy bundle is signed; OPA verifies it with the public key from a Secret, so the identity that
# rolls out bundles (update on the ConfigMap) cannot change the gates without the policy signing key.
# A real cluster keeps this key with the platform team, not in a temp dir.
$VENV/mlsec keys create --dir "$tmp/policy-key"
kubectl -n mlsec-system create secret generic mlsec-policy-bundle-key \
  --from-file=policy-bundle.pub="$tmp/policy-key/signing.pub" --dry-run=client -o yaml | kubectl apply -f -
$VENV/mlsec policy bundle -o "$tmp/bundle.tar.gz" --signing-key "$tmp/policy-key/signing.key"
$VENV/mlsec policy verify-bundle "$tmp/bundle.tar.gz" --public-key "$tmp/policy-key/signing.pub"
kubectl -n mlsec-system create configmap mlsec-policy-bundle --from-file=bundle.tar.gz="$tmp/bundle.tar.gz" \
  --dry-run=client -o yaml | kubectl apply -f -

sed "s#openpolicyagent/opa@sha256:0\{64\}#$(digest "$OPA_IMAGE")#" manifests/opa.yaml | kubectl apply -f -
sed "s#chrislusf/seaweedfs@sha256:0\{64\}#$(digest "$WEED_IMAGE")#" manifests/seaweedfs.yaml | kubectl apply -f -
sed "s#MLSEC_IMAGE: \"\".*#MLSEC_IMAGE: \"${MLSEC_IMAGE_PINNED}\"#; s#MLSEC_GIT_COMMIT: \"\"#MLSEC_GIT_COMMIT: \"$(git rev-parse HEAD)\"#" \
  manifests/config.yaml | kubectl apply -f -
kubectl apply -f manifests/networkpolicies.yaml

# Bucket setup, the admin identity's only use: the bucket with object lock, through a port-forward from here.
kubectl -n mlsec-system rollout status deploy/seaweedfs --timeout=300s
kubectl -n mlsec-system port-forward svc/seaweedfs 18333:8333 >/dev/null & pf=$!
sleep 3
MLSEC_S3_ENDPOINT=http://127.0.0.1:18333 AWS_ACCESS_KEY_ID="$admin_access" AWS_SECRET_ACCESS_KEY="$admin_secret" \
  $VENV/python -c "from mlsec.registry.s3 import client_from_env; from mlsec.registry.store import Registry; \
Registry(client_from_env(), '$BUCKET').ensure_bucket(create=True)"
kill "$pf"
unset admin_access admin_secret

# The serving release: installed once by the platform team; each pipeline run then only patches its
# workload (the chart's Role allows the pipeline nothing more). Clients get keys from `mlsec keys api-key`.
$VENV/mlsec keys api-key platform-smoke-test --file "$tmp/api-keys.json"
kubectl -n mlsec-serving create secret generic mlsec-api-keys --from-file=keys.json="$tmp/api-keys.json" \
  --dry-run=client -o yaml | kubectl apply -f -
helm upgrade --install credit-dev helm/mlsec -n mlsec-serving -f helm/mlsec/values-dev.yaml \
  --set image.repository="${MLSEC_IMAGE_PINNED%@*}" --set image.digest="${MLSEC_IMAGE_PINNED#*@}" \
  --set s3.endpoint=http://seaweedfs.mlsec-system.svc:8333
kubectl -n kubeflow rollout status deploy/ml-pipeline --timeout=600s

echo "Cluster ready. In another shell: kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80"
echo "Then: MLSEC_IMAGE=${MLSEC_IMAGE_PINNED} $VENV/mlsec submit --host http://127.0.0.1:8080"
