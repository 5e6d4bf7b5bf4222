"""Install, on a machine without network, the carried wheels (bench/wheels) of what it lacks.

    python3 bench/carried_wheels.py bench/wheels /tmp/nbkit-site   # then PYTHONPATH=/tmp/nbkit-site:...

Standard library only: it runs before anything else is known to import. A wheel is installed (into
the target folder, never over the interpreter's own packages, and without its dependencies: the
image's jax, flax, numpy and torch stay) when its distribution is missing here, or when it is one of
pyproject.toml's dependencies and the version here is older than the lower bound asked there. Then
every pyproject.toml dependency must be importable at a version that meets its bound: a list of what
fails, and exit status 1, otherwise.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import tomllib

PYPROJECT = Path(__file__).parent.parent / "pyproject.toml"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def release(text: str) -> tuple[int, ...]:
    """The leading numbers of a version ("2.13.0+cpu" → (2, 13, 0)): enough to compare lower bounds."""
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0].split("rc")[0])[:4])


def lower_bounds(pyproject: Path = PYPROJECT) -> dict[str, tuple[int, ...]]:
    """pyproject.toml's run-time dependencies and their `>=` bounds (() where none is given)."""
    bounds = {}
    for requirement in tomllib.loads(pyproject.read_text())["project"]["dependencies"]:
        match = re.match(r"\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*(?:>=\s*([0-9][^,;\s]*))?", requirement)
        if match:
            bounds[canonical(match.group(1))] = release(match.group(2)) if match.group(2) else ()
    return bounds


def installed(name: str) -> tuple[int, ...] | None:
    try:
        return release(version(name))
    except PackageNotFoundError:
        return None


def wheels_to_install(folder: Path, bounds: dict[str, tuple[int, ...]]) -> list[Path]:
    chosen = []
    for wheel in sorted(folder.glob("*.whl")):
        name = canonical(wheel.name.split("-")[0])
        have = installed(name)
        if have is None or (name in bounds and have < bounds[name]):
            chosen.append(wheel)
    return chosen


def problems(bounds: dict[str, tuple[int, ...]]) -> list[str]:
    found = []
    for name, bound in bounds.items():
        have = installed(name)
        if have is None:
            found.append(f"{name}: missing")
        elif have < bound:
            found.append(f"{name}: {'.'.join(map(str, have))} < {'.'.join(map(str, bound))}")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.splitlines()[2].strip(), file=sys.stderr)
        return 2
    folder, target = Path(argv[0]), Path(argv[1])
    bounds = lower_bounds()
    chosen = wheels_to_install(folder, bounds) if folder.is_dir() else []
    if chosen:
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                   "--no-cache-dir", "--disable-pip-version-check", "--upgrade", "--target", str(target),
                   *map(str, chosen)]
        if subprocess.run(command).returncode != 0:
            print(f"error: pip could not install the carried wheels from {folder}", file=sys.stderr)
            return 1
        sys.path.insert(0, str(target))
        import importlib
        importlib.invalidate_caches()
    print(f"carried wheels: {len(chosen)} installed into {target}: "
          + (", ".join(w.name.split("-")[0] for w in chosen) or "none needed"), file=sys.stderr)
    missing = problems(bounds)
    if missing:
        print("error: nbkit's dependencies are not all here: " + "; ".join(missing)
              + ". Run `bash bench/fetch_device_wheels.sh` where there is network and carry bench/wheels.",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
