"""The image build's inputs, checked without building: the pins the image installs (containers/lock.py) and the
build scripts. The build itself is `make image`, exercised by `make test-containers` (tests/test_containers.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
OPA = "opa-golib-python-bindings==0.4.4"


def _pins(path: Path) -> dict[str, str]:
    return dict(line.split("==", 1) for line in path.read_text().splitlines())


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("spec")
    subprocess.run([sys.executable, str(REPO / "containers" / "lock.py"), str(out), "--torch-variant", "cu126", OPA],
                   check=True, capture_output=True)
    return out


def test_the_image_gets_the_venvs_versions_of_its_runtime_closure_alone(spec: Path) -> None:
    torch, rest = _pins(spec / "torch.txt"), _pins(spec / "requirements.txt")
    assert not set(torch) & set(rest)
    pins = {**torch, **rest}
    # Every runtime requirement and its dependencies, at the version the tests ran with.
    for name, version in pins.items():
        assert metadata.version(name).split("+")[0] == version.split("+")[0], name
    assert torch["torch"] == metadata.version("torch").split("+")[0] + "+cu126"  # the variant asked for
    assert {"kfp", "kfp-kubernetes", "great-expectations", "fastapi", "opa-golib-python-bindings"} <= set(rest)
    # Its dependencies' dependencies too (an incomplete closure fails the offline build).
    for dep in metadata.requires("kfp") or []:
        req = Requirement(dep)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            assert canonicalize_name(req.name) in pins, req
    # The test extras stay out of the image.
    assert not {"pytest", "hypothesis", "ruff", "mypy", "schemathesis"} & set(pins)


def test_lock_rewrites_only_what_changed(spec: Path) -> None:
    """make rebuilds the wheelhouse when the pins are newer than it: an unchanged lock keeps its mtime."""
    before = (spec / "requirements.txt").stat().st_mtime_ns
    subprocess.run([sys.executable, str(REPO / "containers" / "lock.py"), str(spec), "--torch-variant", "cu126", OPA],
                   check=True, capture_output=True)
    assert (spec / "requirements.txt").stat().st_mtime_ns == before


def test_lock_refuses_a_requirement_the_venv_does_not_satisfy(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(REPO / "containers" / "lock.py"), str(tmp_path), "kfp<1"],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "does not satisfy kfp<1" in out.stderr


def test_build_scripts_are_shellcheck_clean() -> None:
    assert shutil.which("shellcheck"), "shellcheck is missing (make test installs it from Debian)"
    scripts = sorted(str(p) for p in (REPO / "containers").glob("*.sh"))
    check = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout


def test_no_credential_reaches_the_build() -> None:
    """The build installs offline from the mounted wheelhouse: no index, CA bundle or pip config goes in."""
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "--no-index" in dockerfile and "--mount=type=secret" not in dockerfile
    makefile = (REPO / "Makefile").read_text()
    image_rule = makefile.split("\nimage:", 1)[1].split("\n\n", 1)[0]
    assert "--secret" not in image_rule and "/wheels:ro" in image_rule


def test_every_package_and_data_file_ships_in_the_distribution() -> None:
    """The image installs the project as a wheel, not editable as the venv does: a package or data file missing
    from pyproject's lists works here and fails only in the image (as mlsec.incident did)."""
    import fnmatch
    import tomllib

    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = {name: REPO / path for name, path in setuptools["package-dir"].items()}
    found: dict[str, Path] = {}
    for name, root in roots.items():
        for init in root.rglob("__init__.py"):
            parts = init.parent.relative_to(root).parts
            found[".".join((name,) + parts if name else parts)] = init.parent
    assert set(found) == set(setuptools["packages"])
    data = setuptools.get("package-data", {})
    for package, directory in found.items():
        for path in directory.iterdir():
            if path.is_file() and path.suffix not in (".py", ".pyc"):
                assert any(fnmatch.fnmatch(path.name, g) for g in data.get(package, [])), (package, path.name)
