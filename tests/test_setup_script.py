"""setup_colab.sh's arguments and failure paths, and the one list of dependencies it installs
(pyproject.toml). Its install path runs in CI's .ci/run, in a fresh venv."""

import ast
import re
import subprocess
import sys

from conftest import ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the copy pip carries, as setup_colab.sh reads it
    from pip._vendor import tomli as tomllib

SCRIPT = ROOT / "setup_colab.sh"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
USAGE = "usage: bash setup_colab.sh [--test]"
# Distributions whose import name is not their name with "-" as "_".
IMPORT_NAMES = {"pillow": "PIL"}
# Imported but not nbkit's to install: ipywidgets brings IPython; Colab brings google.colab.
PROVIDED = {"IPython", "google"}


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args],
                          env={"PATH": "/usr/bin:/bin", "PYTHON": "/no/such/python3"},
                          capture_output=True, text=True)


def import_name(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement)[0].lower()
    return IMPORT_NAMES.get(name, name.replace("-", "_"))


def third_party_imports() -> set[str]:
    names = set()
    for path in (ROOT / "nbkit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names and name != "nbkit"}


def test_a_missing_python_stops_with_a_clear_message_and_exit_1():
    out = run_script()
    assert out.returncode == 1
    assert out.stderr.strip() == "setup_colab.sh: no /no/such/python3 found; install Python 3.11 or newer."


def test_an_unknown_argument_stops_with_the_usage_and_exit_2_before_anything_else():
    out = run_script("--tests")
    assert out.returncode == 2
    assert out.stderr.splitlines()[:2] == ["setup_colab.sh: unknown argument: --tests", USAGE]
    assert out.stdout == ""


def test_help_prints_the_usage():
    out = run_script("--help")
    assert out.returncode == 0
    assert out.stdout.startswith(USAGE + "\n") and "--test" in out.stdout


def test_requirements_txt_installs_the_project_and_lists_nothing_itself():
    lines = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert [line for line in lines if line and not line.startswith("#")] == ["-e ."]


def test_every_dependency_is_imported_by_nbkit():
    unused = {import_name(r) for r in PROJECT["dependencies"]} - third_party_imports()
    assert not unused, f"pyproject.toml lists {sorted(unused)}, which nbkit never imports"


def test_every_package_nbkit_imports_is_listed():
    listed = {import_name(r) for r in PROJECT["dependencies"]}
    listed |= {import_name(r) for extra in PROJECT["optional-dependencies"].values() for r in extra}
    unlisted = third_party_imports() - listed - PROVIDED
    assert not unlisted, f"nbkit imports {sorted(unlisted)}, which pyproject.toml does not list"


def test_the_readme_test_command_installs_the_tools_it_runs():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    command = next(line for block in blocks for line in block.splitlines() if "pytest" in line)
    assert command.startswith("bash setup_colab.sh --test && ")
    tools = re.findall(r"python -m (\w+)", command)
    assert "pytest" in tools
    assert set(tools) <= {import_name(r) for r in PROJECT["optional-dependencies"]["test"]}
