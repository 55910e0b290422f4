package mlsec.gates.deployment_test

import data.mlsec.gates.deployment as gate

release := {"model": "credit", "version": "072d48ebb4b5068b", "stage": "dev", "target": "cluster", "namespace": "serving"}

container := {
	"name": "server",
	"image": "ghcr.io/mlsec/mlsec@sha256:0000000000000000000000000000000000000000000000000000000000000000",
	"resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
	"readinessProbe": {"httpGet": {"path": "/", "port": 8080}},
	"securityContext": {
		"allowPrivilegeEscalation": false, "privileged": false, "readOnlyRootFilesystem": true,
		"capabilities": {"drop": ["ALL"]},
	},
}

pod := {
	"automountServiceAccountToken": false,
	"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
	"containers": [container],
	"volumes": [{"name": "tmp", "emptyDir": {}}],
}

deployment := {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "server", "namespace": "serving"}, "spec": {"template": {"spec": pod}}}

netpol := {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "default-deny", "namespace": "serving"}, "spec": {}}

evidence(objects) := {
	"kind": "mlsec.evidence.deployment/v1",
	"subject": {"name": "credit", "digest": "072d48ebb4b5068b04063ff8aa5d079924371519871b313d0e9947f4d0085bed"},
	"release": release,
	"objects": objects,
}

promoted := [{"gate": "promotion", "environment": "dev", "allow": true, "subject": "072d48ebb4b5068b04063ff8aa5d079924371519871b313d0e9947f4d0085bed"}]

decide(objects) := d if {
	d := gate.decision with input as {"environment": "dev", "evidence": evidence(objects), "decisions": promoted}
}

with_pod(patch) := [object.union(deployment, {"spec": {"template": {"spec": patch}}}), netpol]

with_container(patch) := with_pod({"containers": [object.union(container, patch)]})

without(field) := with_pod({"containers": [object.remove(container, [field])]})

denied(objects, fragment) if {
	some msg in decide(objects).deny
	contains(msg, fragment)
}

test_hardened_deployment_allowed if {
	d := decide([deployment, netpol])
	d.allow
	count(d.warn) == 0
}

test_inference_service_predictor_is_checked if {
	isvc := {"kind": "InferenceService", "metadata": {"name": "credit"}, "spec": {"predictor": object.union(pod, {"minReplicas": 2})}}
	decide([isvc, netpol]).allow
	bad := {"kind": "InferenceService", "metadata": {"name": "credit"}, "spec": {"predictor": object.union(pod, {"automountServiceAccountToken": true})}}
	denied([bad, netpol], "InferenceService/credit: automountServiceAccountToken")
}

test_pod_and_cronjob_specs_are_checked if {
	denied([{"kind": "Pod", "metadata": {"name": "p"}, "spec": object.union(pod, {"hostNetwork": true})}, netpol], "Pod/p: hostNetwork")
	cron := {"kind": "CronJob", "metadata": {"name": "c"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": object.union(pod, {"hostPID": true})}}}}}
	denied([cron, netpol], "CronJob/c: hostPID")
}

test_wrong_evidence_kind_denied if {
	d := gate.decision with input as {"environment": "dev", "evidence": object.union(evidence([deployment, netpol]), {"kind": "x"}), "decisions": []}
	some msg in d.deny
	contains(msg, "evidence kind")
}

test_unknown_environment_denied if {
	d := gate.decision with input as {"environment": "nope", "evidence": evidence([deployment, netpol]), "decisions": []}
	some msg in d.deny
	contains(msg, "no deployment policy for environment")
}

test_empty_release_denied if denied([], "nothing to deploy")

test_local_server_on_loopback_allowed if decide([{"kind": "LocalServer", "bind": "127.0.0.1", "port": 8080, "verify_signature": true}]).allow

test_local_server_on_all_interfaces_denied if {
	denied([{"kind": "LocalServer", "bind": "0.0.0.0", "port": 8080, "verify_signature": true}], `local server binds "0.0.0.0"`)
}

test_local_server_without_verification_denied if {
	denied([{"kind": "LocalServer", "bind": "127.0.0.1", "port": 8080, "verify_signature": false}], "without verifying its signature")
}

test_root_pod_denied if denied(with_pod({"securityContext": {"runAsNonRoot": false}}), "runAsNonRoot must be true")

test_unconfined_seccomp_denied if denied(with_pod({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}), "seccompProfile must be RuntimeDefault")

test_service_account_token_denied if denied(with_pod({"automountServiceAccountToken": true}), "automountServiceAccountToken must be false")

test_host_network_denied if denied(with_pod({"hostNetwork": true}), "hostNetwork is not allowed")

test_host_path_denied if denied(with_pod({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}), `hostPath volume "root"`)

test_privilege_escalation_denied if denied(with_container({"securityContext": {"allowPrivilegeEscalation": true}}), "allowPrivilegeEscalation must be false")

test_privileged_denied if denied(with_container({"securityContext": {"privileged": true}}), "privileged is not allowed")

test_capabilities_must_drop_all if denied(with_container({"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}), "capabilities must drop ALL")

test_writable_root_fs_denied if denied(with_container({"securityContext": {"readOnlyRootFilesystem": false}}), "readOnlyRootFilesystem must be true")

test_missing_limits_denied if denied(without("resources"), "no memory limit")

test_unpinned_image_denied if denied(with_container({"image": "ghcr.io/mlsec/mlsec:latest"}), "is not pinned by digest")

test_init_containers_checked if {
	denied(with_pod({"initContainers": [object.union(container, {"name": "init", "securityContext": {"privileged": true}})]}), `container "init": privileged`)
}

test_missing_network_policy_denied if denied([deployment], `no NetworkPolicy for namespace "serving"`)

test_network_policy_in_other_namespace_does_not_count if {
	denied([deployment, object.union(netpol, {"metadata": {"namespace": "elsewhere"}})], "no NetworkPolicy")
}

test_missing_readiness_probe_warns if {
	d := decide(without("readinessProbe"))
	some w in d.warn
	contains(w, "no readiness probe")
}

test_misnamed_flag_denied if {
	d := decide([deployment, netpol]) with data.data.dev.deployment as object.remove(data.data.dev.deployment, ["require_network_policy"])
	"policy data dev.deployment.require_network_policy is missing" in d.deny
}

test_model_without_allowing_promotion_denied if {
	d := gate.decision with input as {"environment": "dev", "evidence": evidence([deployment, netpol]), "decisions": []}
	d.deny == {"no allowing promotion-gate decision for 072d48ebb4b5068b04063ff8aa5d079924371519871b313d0e9947f4d0085bed"}
}

test_promotion_under_another_environment_denied if {
	d := gate.decision with input as {"environment": "prod", "evidence": evidence([deployment, netpol]), "decisions": promoted}
	some msg in d.deny
	contains(msg, "promotion-gate decision for 072d48ebb4b5068b04063ff8aa5d079924371519871b313d0e9947f4d0085bed was taken under the dev policy, not prod")
}

# Policy toggles, on and off: with require_image_digest false a tag passes; with require_network_policy
# false a release without a NetworkPolicy passes.
toggled(objects, patch) := d if {
	d := gate.decision with input as {"environment": "dev", "evidence": evidence(objects), "decisions": promoted}
		with data.data as object.union(data.data, {"dev": {"deployment": patch}})
}

test_require_image_digest_toggle if {
	tagged := with_container({"image": "ghcr.io/mlsec/mlsec:latest"})
	not toggled(tagged, {"require_image_digest": true}).allow
	toggled(tagged, {"require_image_digest": false}).allow
}

test_require_network_policy_toggle if {
	bare := [deployment]
	not toggled(bare, {"require_network_policy": true}).allow
	toggled(bare, {"require_network_policy": false}).allow
}

# Signed image digests (require_signed_image): only a digest whose signature the serve stage verified counts.
image_digest := "sha256:0000000000000000000000000000000000000000000000000000000000000000"

with_images(objects, images, patch) := d if {
	d := gate.decision with input as {"environment": "dev", "evidence": object.union(evidence(objects), {"images": images}), "decisions": promoted}
		with data.data as object.union(data.data, {"dev": {"deployment": patch}})
}

test_require_signed_image_toggle if {
	not with_images([deployment, netpol], [], {"require_signed_image": true}).allow
	with_images([deployment, netpol], [], {"require_signed_image": false}).allow
}

test_verified_image_signature_allowed if {
	with_images([deployment, netpol], [{"digest": image_digest, "signature_verified": true}], {"require_signed_image": true}).allow
}

test_unverified_image_signature_denied if {
	d := with_images([deployment, netpol], [{"digest": image_digest, "signature_verified": false}], {"require_signed_image": true})
	some msg in d.deny
	contains(msg, "has no verified signature over its digest")
}

test_signature_of_another_image_denied if {
	other := "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	not with_images([deployment, netpol], [{"digest": other, "signature_verified": true}], {"require_signed_image": true}).allow
}

test_tagged_image_never_counts_as_signed if {
	tagged := with_container({"image": "ghcr.io/mlsec/mlsec:latest"})
	d := with_images(tagged, [{"digest": image_digest, "signature_verified": true}], {"require_signed_image": true, "require_image_digest": false})
	some msg in d.deny
	contains(msg, "has no verified signature over its digest")
}

prod_promoted := [object.union(promoted[0], {"environment": "prod"})]

unsigned_denied(env) if {
	d := gate.decision with input as {"environment": env, "evidence": evidence([deployment, netpol]), "decisions": [object.union(promoted[0], {"environment": env})]}
	some msg in d.deny
	contains(msg, "has no verified signature over its digest")
}

test_unsigned_image_denied_in_prod_and_staging if {
	unsigned_denied("staging")
	unsigned_denied("prod")
	not unsigned_denied("dev")
}

test_signed_image_allowed_in_prod if {
	ev := object.union(evidence([deployment, netpol]), {"images": [{"digest": image_digest, "signature_verified": true}]})
	gate.decision.allow with input as {"environment": "prod", "evidence": ev, "decisions": prod_promoted}
}

# A reference holding two digests names no single image: the signed one in the middle does not make it signed.
test_reference_with_two_digests_never_counts_as_signed if {
	other := "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	doubled := with_container({"image": concat("@", ["ghcr.io/mlsec/mlsec", image_digest, other])})
	not with_images(doubled, [{"digest": image_digest, "signature_verified": true}], {"require_signed_image": true}).allow
}
