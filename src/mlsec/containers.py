"""Pipeline tasks in the project's image through kfp.local.DockerRunner, over podman's Docker-compatible socket.

Every container runs as a cluster would run it: uid 10001, read-only root filesystem, no capabilities,
no privilege escalation; only /tmp (tmpfs) and the mounted state directory are writable.

kfp 2.17.3's runner starts containers with auto_remove and asks for the exit code afterwards; podman 4.3
answers HTTP 500 (not 404) for a container it has just removed, so short tasks crash the run, and kfp maps a
404 to exit code 0, so a failed task could pass as a success. run_container replaces it: no auto-remove, logs
streamed, the exit code from wait(), the container removed in `finally`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
UID = 10001
IMAGE_REF_FILE = REPO / "build" / "image.ref"
# The project's podman settings; CONTAINERS_STORAGE_CONF may name another storage root (as `make` passes it).
CONTAINERS_ENV = {"CONTAINERS_CONF": str(REPO / "containers" / "containers.conf"),
                  "CONTAINERS_STORAGE_CONF": os.environ.get("CONTAINERS_STORAGE_CONF",
                                                            str(REPO / "containers" / "storage.conf"))}

# The settings every task container runs with (docker SDK `containers.run` arguments).
HARDENED: dict[str, Any] = {
    "user": f"{UID}:{UID}",
    "read_only": True,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "tmpfs": {"/tmp": "rw,nosuid,nodev,size=1g,mode=1777"},
    "pids_limit": 1024,
}

# Paths the image itself sets; a host checkout's values would name files the container does not have.
_IMAGE_OWNED = {"MLSEC_POLICY_DIR", "MLSEC_CONTRACT", "MLSEC_SAMPLE_DATA", "MLSEC_CHART_DIR"}


def built_image() -> str:
    """The REF@sha256:... `make image` recorded."""
    if not IMAGE_REF_FILE.exists():
        raise FileNotFoundError(f"{IMAGE_REF_FILE} is missing: run `make image` first")
    return IMAGE_REF_FILE.read_text().strip()


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], env={**os.environ, **CONTAINERS_ENV}, check=check,
                          capture_output=True, text=True)


@contextlib.contextmanager
def podman_socket(run_dir: Path, timeout_s: float = 30.0) -> Iterator[str]:
    """`podman system service` on a private unix socket; yields its DOCKER_HOST URL; stopped on exit."""
    run_dir.mkdir(parents=True, exist_ok=True)
    sock = run_dir / "podman.sock"
    sock.unlink(missing_ok=True)
    url = f"unix://{sock}"
    with (run_dir / "podman-service.log").open("ab") as log:
        proc = subprocess.Popen(["podman", "system", "service", "--time=0", url], env={**os.environ, **CONTAINERS_ENV},
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"podman system service did not open {sock}; see {run_dir / 'podman-service.log'}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def task_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The host's run settings a task reads (MLSEC_*, AWS_*), less the paths the image owns."""
    return {k: v for k, v in environ.items()
            if (k.startswith(("MLSEC_", "AWS_")) or k in ("GOGC", "GOMEMLIMIT")) and k not in _IMAGE_OWNED}


def run_container(client: Any, image: str, command: list[str], volumes: dict[str, Any],
                  extra_volumes: Mapping[str, Any] | None = None, **run_args: Any) -> int:
    """kfp's run_docker_container without auto-remove: stream logs, exit code from wait(), remove in finally."""
    import docker

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise RuntimeError(f"image {image} is not in local storage: run `make image`") from None
    # A cluster's pod `command` replaces the image's ENTRYPOINT; do the same here.
    container = client.containers.create(image=image, entrypoint=command[:1], command=command[1:],
                                         volumes={**volumes, **(extra_volumes or {})}, **run_args)
    try:
        container.start()
        for line in container.logs(stream=True, follow=True):
            print(line.decode(errors="replace"), end="")
        return int(container.wait()["StatusCode"])
    finally:
        container.remove(force=True)


def install(extra_volumes: Mapping[str, Any]) -> None:
    """Routes kfp.local's DockerRunner through run_container, with the run's state directory mounted."""
    import functools

    from kfp.local import docker_task_handler

    docker_task_handler.run_docker_container = functools.partial(run_container, extra_volumes=extra_volumes)


def state_mounts(home: Path) -> dict[str, Any]:
    """The run's state directory, read-write, with the S3 identities' credential dirs read-only."""
    creds = home / "s3" / "credentials"
    return {str(home): {"bind": str(home), "mode": "rw"}, str(creds): {"bind": str(creds), "mode": "ro"}}


def docker_runner(environment: Mapping[str, str], home: Path) -> Any:
    """Hardened containers on the host's network namespace, where the local S3 listens on 127.0.0.1.

    SeaweedFS's own files under home/s3 (its admin key, raw volumes) are hidden behind an empty tmpfs;
    a task reaches the registry only through S3 with the identity it is given.
    """
    from kfp import local

    tmpfs = {**HARDENED["tmpfs"], str(home / "s3"): "rw,nosuid,nodev,size=1m,mode=0755"}
    return local.DockerRunner(**{**HARDENED, "tmpfs": tmpfs, "network_mode": "host",
                                 "environment": dict(environment)})


def hand_to_task_user(path: Path) -> None:
    """Rootful podman: the task's uid 10001 must own the state it writes (it holds no capability to
    override file modes). Rootless podman would map the user instead (--userns=keep-id:uid=10001)."""
    if os.geteuid() != 0:
        raise RuntimeError("container runs need rootful podman here (state handed to uid 10001)")
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), UID, UID, follow_symlinks=False)
    os.chown(path, UID, UID)
