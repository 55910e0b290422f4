"""The image's requirements, pinned to the versions the project's venv runs (the ones its tests passed with).

    .venv/bin/python containers/lock.py OUT_DIR [--torch-variant cpu|cu126|...] [EXTRA_REQUIREMENT ...]

Walks the runtime dependencies (pyproject's [project] dependencies and the extra requirements given, not the
test extras) through the installed distributions' metadata and writes OUT_DIR/torch.txt (torch and its own
dependencies: the largest install, its own image layer) and OUT_DIR/requirements.txt (everything else), one
`name==version` a line.
`make image` downloads exactly these into a wheelhouse with the host's pip (its index, proxy and CA settings) and
the build installs from that wheelhouse alone, offline: nothing is downloaded twice, no credential enters the build.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def closure(requirements: list[str]) -> dict[str, str]:
    """Installed version of every distribution the requirements need, with their extras' dependencies."""
    wanted: dict[str, set[str]] = {}  # canonical name -> extras asked for so far
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in wanted and set(req.extras) <= wanted[name]:
            continue  # seen, and no new extra to follow
        extras = wanted.setdefault(name, set())
        extras |= set(req.extras)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"{req.name} is not installed in {sys.prefix}: run `make install` first") from None
        if not req.specifier.contains(dist.version, prereleases=True):
            raise SystemExit(f"installed {req.name} {dist.version} does not satisfy {req}")
        for line in dist.requires or []:
            dep = Requirement(line)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in extras | {""}):
                todo.append(dep)
    return {name: metadata.version(name) for name in sorted(wanted)}


def _write(path: Path, text: str) -> None:
    """Only when changed: make rebuilds the wheelhouse when these files are newer than it."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("extra", nargs="*", help="requirements installed beside the project's own")
    parser.add_argument("--torch-variant", default="", help="cpu, cu126, ...: the torch build the image gets")
    args = parser.parse_intermixed_args(argv)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = closure([*project["dependencies"], *args.extra])
    if args.torch_variant and "torch" in pins:
        pins["torch"] = pins["torch"].split("+")[0] + "+" + args.torch_variant
    torch = set(closure([f"torch=={metadata.version('torch')}"])) if "torch" in pins else set()
    args.out.mkdir(parents=True, exist_ok=True)
    _write(args.out / "torch.txt", "".join(f"{n}=={v}\n" for n, v in pins.items() if n in torch))
    _write(args.out / "requirements.txt", "".join(f"{n}=={v}\n" for n, v in pins.items() if n not in torch))
    print(f"{args.out}: {len(pins)} pinned distributions, {len(torch)} of them torch and its dependencies")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
