"""What the serve stage deploys: rendered objects for a cluster, or a loopback server process locally.

Either way the deployment gate judges the exact objects first, and only those objects are applied.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlsec.config import chart_dir


def render_chart(release: str, namespace: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Renders helm/mlsec with Helm's own engine (helm-python-sdk); NOTES.txt is not an object."""
    import helm_python as helm

    chart = helm.Chart.load(str(chart_dir()))
    rendered = chart.render(values, name=release, namespace=namespace)
    return [doc for path, text in sorted(rendered.items()) if path.endswith((".yaml", ".yml"))
            for doc in yaml.safe_load_all(text) if doc]


def environment_values(environment: str) -> dict[str, Any]:
    """values-<environment>.yaml of the chart: what the platform team installed that environment's release with."""
    path = chart_dir() / f"values-{environment}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no values file for environment {environment!r}: {path} is missing")
    return yaml.safe_load(path.read_text()) or {}


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of `-f` files and `--set`: maps merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        out[key] = (merge_values(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict)
                    else value)
    return out


def render_release(release: str, namespace: str, environment: str, overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """The chart as `helm template -f values-<environment>.yaml --set <overrides>` renders it."""
    return render_chart(release, namespace, merge_values(environment_values(environment), overrides))


def free_port() -> int:
    """A TCP port nothing listens on right now, on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def local_objects(model: str, version: str, host: str, port: int) -> list[dict[str, Any]]:
    return [{"kind": "LocalServer", "model": model, "version": version, "bind": host, "port": port,
             "verify_signature": True}]


# What each release applies: the workload and the network isolation it relies on. The chart installs
# the rest once (Service, RBAC, PDB, HPA), so the pipeline's service account needs nothing beyond
# get/patch on these named objects, and the deployment gate judges exactly what is applied.
APPLIED_KINDS = {"Deployment", "InferenceService", "NetworkPolicy"}


def release_objects(rendered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in rendered if o["kind"] in APPLIED_KINDS]


# The deployer service account's token Secret, mounted into the serve task alone (manifests/deployer.yaml).
DEPLOYER_TOKEN_DIR = "/var/run/secrets/mlsec-deployer"


def apply(objects: list[dict[str, Any]], namespace: str) -> list[str]:
    """Server-side apply, through the Kubernetes API, of exactly the objects the deployment gate allowed.

    In a cluster it authenticates as mlsec-deployer, the only subject of the release's deployer Role, never as
    the pod's own pipeline-runner account; without that token it refuses rather than fall back."""
    from kubernetes import client, config, dynamic
    from kubernetes.config.incluster_config import InClusterConfigLoader

    token_dir = Path(os.environ.get("MLSEC_DEPLOYER_TOKEN_DIR") or DEPLOYER_TOKEN_DIR)
    if "KUBERNETES_SERVICE_HOST" in os.environ:
        if not (token_dir / "token").is_file():
            raise RuntimeError(f"no deployer token in {token_dir}: the serve task applies only as mlsec-deployer")
        InClusterConfigLoader(token_filename=str(token_dir / "token"), cert_filename=str(token_dir / "ca.crt"),
                              try_refresh_token=False).load_and_set()
    else:
        config.load_kube_config()
    api = dynamic.DynamicClient(client.ApiClient())
    applied = []
    for obj in objects:
        resource = api.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        ns = obj["metadata"].get("namespace", namespace) if resource.namespaced else None
        resource.server_side_apply(body=obj, name=obj["metadata"]["name"], namespace=ns,
                                   field_manager="mlsec", force_conflicts=True)
        applied.append(f"{obj['kind']}/{obj['metadata']['name']}")
    return applied


@dataclass(frozen=True)
class LocalServer:
    pid: int
    url: str
    model: str
    log: Path

    def predict(self, instances: list[dict[str, float]], api_key: str, timeout: float = 10.0) -> dict[str, Any]:
        req = urllib.request.Request(
            f"{self.url}/v1/models/{self.model}:predict", data=json.dumps({"instances": instances}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}, method="POST",
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after 10 s; a zombie counts as stopped."""
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.waitpid(self.pid, os.WNOHANG)  # reap it if it is our child
            except ChildProcessError:
                pass
            if not running(self.pid):
                return
            time.sleep(0.1)
        os.killpg(self.pid, signal.SIGKILL)


def running(pid: int) -> bool:
    """Alive and not a zombie waiting for a parent (or an init) that may never reap it."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def start_local(model: str, ref: str, host: str, port: int, log: Path, digest: str | None = None,
                timeout_s: float = 60.0) -> LocalServer:
    """Starts `mlsec serve` detached (it outlives the KFP task) and waits until the model is ready.

    The server inherits this process's settings, so it trusts exactly what the pipeline trusts, but not
    its S3 credentials: it reads the registry with the read-only ones MLSEC_SERVE_S3_CREDENTIALS_DIR names.
    """
    env = server_env(os.environ)
    log.parent.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "mlsec.cli", "serve", "--name", model, "--ref", ref, "--host", host,
            "--port", str(port), *(["--digest", digest] if digest else [])]
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    server = LocalServer(pid=proc.pid, url=f"http://{host}:{port}", model=model, log=log)
    if wait_ready(server.url, model, timeout_s, alive=lambda: proc.poll() is None):
        return server
    if proc.poll() is not None:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"model server exited with {proc.returncode} before it was ready:\n{tail}")
    server.stop()
    raise TimeoutError(f"model server not ready on {server.url} within {timeout_s}s; see {log}")


_S3_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
               "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "MLSEC_S3_CREDENTIALS_DIR",
               "MLSEC_SERVE_S3_CREDENTIALS_DIR")


def server_env(environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """The local server's environment: the pipeline's, without any way to its S3 write credentials."""
    reader = environ.get("MLSEC_SERVE_S3_CREDENTIALS_DIR")
    if not reader:
        raise RuntimeError("MLSEC_SERVE_S3_CREDENTIALS_DIR is not set: the local model server gets the "
                           "registry's read-only credentials only, never the pipeline's")
    env = {k: v for k, v in environ.items() if k not in _S3_SECRETS}
    env["MLSEC_S3_CREDENTIALS_DIR"] = reader
    return env


def wait_ready(url: str, model: str, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> bool:
    """Polls the model's metadata until it says ready; False on timeout or once alive() turns false."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        try:
            with urllib.request.urlopen(f"{url}/v1/models/{model}", timeout=1) as resp:
                if json.loads(resp.read()).get("ready"):
                    return True
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.25)
    return False
