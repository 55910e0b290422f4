# Deployment gate: judges the exact objects about to be applied (conftest style), for a model the
# promotion gate allowed. Cluster: Pod Security Standard "restricted" and more; local: a loopback-only,
# verifying server.
package mlsec.gates.deployment

import data.mlsec.lib.config
import data.mlsec.lib.decisions

cfg := data.data[input.environment].deployment

# Every key this policy reads from cfg, with its type (see lib/config.rego).
config_types := {
	"local_bind_hosts": "array", "require_image_digest": "boolean", "require_network_policy": "boolean",
	"require_signed_image": "boolean",
}

config_problems := config.problems([input.environment, "deployment"], cfg, config_types)

ev := input.evidence

workload_kinds := {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}

pod_spec(obj) := obj.spec.template.spec if workload_kinds[obj.kind]

pod_spec(obj) := obj.spec if obj.kind == "Pod"

pod_spec(obj) := obj.spec.jobTemplate.spec.template.spec if obj.kind == "CronJob"

# KServe's predictor is a pod spec with extra fields (minReplicas, ...).
pod_spec(obj) := obj.spec.predictor if obj.kind == "InferenceService"

workloads contains [name, spec] if {
	some obj in ev.objects
	spec := pod_spec(obj)
	name := sprintf("%s/%s", [obj.kind, obj.metadata.name])
}

containers contains [name, c, spec] if {
	some [name, spec] in workloads
	some field in ["containers", "initContainers"]
	some c in spec[field]
}

deny contains msg if {
	not ev.kind == "mlsec.evidence.deployment/v1"
	msg := sprintf("evidence kind %v is not mlsec.evidence.deployment/v1", [object.get(input, ["evidence", "kind"], null)])
}

deny contains msg if {
	not cfg
	msg := sprintf("no deployment policy for environment %q", [input.environment])
}

deny contains msg if {
	some msg in config_problems
}

deny contains msg if {
	count(ev.objects) == 0
	msg := "nothing to deploy: the release has no objects"
}

deny contains msg if {
	not decisions.allowed("promotion", ev.subject.digest)
	msg := decisions.missing("promotion", ev.subject.digest)
}

# --- local target -------------------------------------------------------------------------
deny contains msg if {
	some obj in ev.objects
	obj.kind == "LocalServer"
	not obj.bind in cfg.local_bind_hosts
	msg := sprintf("local server binds %q; only %s allowed", [obj.bind, concat(", ", cfg.local_bind_hosts)])
}

deny contains msg if {
	some obj in ev.objects
	obj.kind == "LocalServer"
	not obj.verify_signature
	msg := "local server would load the model without verifying its signature"
}

# --- cluster target: Pod Security Standard "restricted" and hardening ---------------------
deny contains msg if {
	some [name, spec] in workloads
	not spec.securityContext.runAsNonRoot
	msg := sprintf("%s: pod securityContext.runAsNonRoot must be true", [name])
}

deny contains msg if {
	some [name, spec] in workloads
	not spec.securityContext.seccompProfile.type == "RuntimeDefault"
	msg := sprintf("%s: pod seccompProfile must be RuntimeDefault", [name])
}

deny contains msg if {
	some [name, spec] in workloads
	not spec.automountServiceAccountToken == false
	msg := sprintf("%s: automountServiceAccountToken must be false", [name])
}

deny contains msg if {
	some [name, spec] in workloads
	some flag in ["hostNetwork", "hostPID", "hostIPC"]
	spec[flag]
	msg := sprintf("%s: %s is not allowed", [name, flag])
}

deny contains msg if {
	some [name, spec] in workloads
	some v in spec.volumes
	v.hostPath
	msg := sprintf("%s: hostPath volume %q is not allowed", [name, v.name])
}

deny contains msg if {
	some [name, c, _] in containers
	not c.securityContext.allowPrivilegeEscalation == false
	msg := sprintf("%s container %q: allowPrivilegeEscalation must be false", [name, c.name])
}

deny contains msg if {
	some [name, c, _] in containers
	c.securityContext.privileged
	msg := sprintf("%s container %q: privileged is not allowed", [name, c.name])
}

deny contains msg if {
	some [name, c, _] in containers
	not "ALL" in c.securityContext.capabilities.drop
	msg := sprintf("%s container %q: capabilities must drop ALL", [name, c.name])
}

deny contains msg if {
	some [name, c, _] in containers
	not c.securityContext.readOnlyRootFilesystem
	msg := sprintf("%s container %q: readOnlyRootFilesystem must be true", [name, c.name])
}

deny contains msg if {
	some [name, c, _] in containers
	some resource in ["cpu", "memory"]
	not c.resources.limits[resource]
	msg := sprintf("%s container %q: no %s limit", [name, c.name, resource])
}

deny contains msg if {
	some [name, c, _] in containers
	cfg.require_image_digest
	not contains(c.image, "@sha256:")
	msg := sprintf("%s container %q: image %q is not pinned by digest", [name, c.name, c.image])
}

# The image's signature (model signing key, over the image digest) was verified by the serve stage before it
# asked this gate; only digests it verified count, so a tag or an unsigned or re-built image is refused.
signed_image_digests contains img.digest if {
	some img in object.get(ev, "images", [])
	img.signature_verified == true
}

deny contains msg if {
	some [name, c, _] in containers
	cfg.require_signed_image
	not image_signed(c.image)
	msg := sprintf("%s container %q: image %q has no verified signature over its digest", [name, c.name, c.image])
}

image_signed(ref) if image_digest(ref) in signed_image_digests

image_digest(ref) := d if {
	parts := split(ref, "@")
	count(parts) == 2
	d := parts[1]
}

deny contains msg if {
	count(workloads) > 0
	cfg.require_network_policy
	not network_policy_present
	msg := sprintf("no NetworkPolicy for namespace %q", [ev.release.namespace])
}

network_policy_present if {
	some obj in ev.objects
	obj.kind == "NetworkPolicy"
	object.get(obj.metadata, "namespace", ev.release.namespace) == ev.release.namespace
}

warn contains msg if {
	some [name, c, _] in containers
	not c.readinessProbe
	msg := sprintf("%s container %q: no readiness probe", [name, c.name])
}

decision := {"allow": count(deny) == 0, "deny": deny, "warn": warn}
