"""The documentation cannot drift from the code: README.md and docs/*.md read as a user would.

- the README fits a screen (at most 200 lines) and keeps the test line CI greps for;
- every relative link (and `#anchor`) leads to a file and heading that exist;
- every `python -m nbkit …` / `nbkit …` command in a bash block or inline code parses with the CLI's
  own argparse parser (`nbkit.cli.parser`, which imports no jax), every `python bench/….py` command
  uses only options its script declares, and every `--flag` the pages name exists somewhere;
- every option of every command is documented somewhere in docs/, and every command has an example.

Nothing runs: parsing only, so the whole file takes a second or two. Markdown is read with a few
regular expressions rather than a Markdown library: the pages use fenced blocks, inline code, headings
and `[text](target)` links only, and a parser would add a dependency for no extra check.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import io
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
from conftest import ROOT

from nbkit.cli import parser as nbkit_parser
from nbkit.server.command import check_hosts, check_origins

TEST_LINE = "bash setup_colab.sh --test && python -m ruff check && python -m pytest"
MAX_README_LINES = 200
# Folders that commands make when they run (ignored by git): pages may name what will be there.
MADE_AT_RUN_TIME = ("bench/out/", "bench/out", "bench/wheels")
# Options of other programs the pages mention (pip, pytest, ruff, ray, cloudflared, XLA, wandb).
EXTERNAL_FLAGS = {"--help", "--version",
                  # pip
                  "--upgrade", "--quiet", "--no-deps", "--index-url", "--extra-index-url", "--no-cache-dir",
                  "--pre", "--user", "--editable", "--requirement",
                  # pytest (and pytest-xdist), ruff
                  "--durations", "--durations-min", "--lf", "--ff", "--dist", "--maxfail", "--numprocesses",
                  "--collect-only", "--tb", "--timeout", "--ignore", "--deselect", "--basetemp",
                  "--fix", "--diff", "--pdb",
                  # .ci/run
                  "--dry-run",
                  # ray start, cloudflared, wandb login, XLA_FLAGS
                  "--head", "--address", "--num-cpus", "--num-gpus", "--dashboard-host", "--url",
                  "--anonymously",
                  "--xla_force_host_platform_device_count"}
SHELLS = {"bash", "sh", "shell", "console"}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
INLINE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")


def pages(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def split_page(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The page's prose (fenced blocks blanked out) and its fenced blocks as (language, text)."""
    prose, blocks, block, fence, language = [], [], [], None, ""
    for line in text.splitlines():
        found = FENCE.match(line)
        if fence is None and found:
            fence, language, block = found.group(2), found.group(3).lower(), []
            prose.append("")
        elif fence is not None and line.strip().startswith(fence[0] * len(fence)) and not line.strip(
                ).strip(fence[0]):
            blocks.append((language, "\n".join(block)))
            fence = None
            prose.append("")
        elif fence is not None:
            block.append(line)
        else:
            prose.append(line)
    return "\n".join(prose), blocks


def inline_code(prose: str) -> list[str]:
    return [" ".join(span.split()) for span in INLINE.findall(prose)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    prose, _ = split_page(page.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    for line in prose.splitlines():
        if found := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line):
            base = slug(found.group(1))
            seen[base] = seen.get(base, -1) + 1
    return {base if n == 0 else f"{base}-{n}" for base, count in seen.items() for n in range(count + 1)}


def broken_links(root: Path) -> list[str]:
    problems = []
    for page in pages(root):
        prose, _ = split_page(page.read_text(encoding="utf-8"))
        for target in LINK.findall(INLINE.sub("", prose)):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):           # https:, mailto:: not this repository's
                continue
            path, _, anchor = target.partition("#")
            where = Path(os.path.normpath(page.parent / path)) if path else page
            name = os.path.relpath(where, root)
            if not where.exists():
                problems.append(f"{page.relative_to(root)}: link to {target}: no {name}")
            elif anchor and where.suffix == ".md" and anchor not in anchors(where):
                problems.append(f"{page.relative_to(root)}: link to {target}: {name} has no heading "
                                f"#{anchor}")
    return problems


def strip_comment(line: str) -> str:
    """The line without its shell comment (a # that starts a word, outside quotes)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def shell_commands(block: str, console: bool = False) -> list[list[str]]:
    """Each simple command of a bash block, as argv: lines joined at `\\`, split at && || ; |, the
    leading VAR=value assignments dropped. In a console block only the lines after a `$ ` prompt (and
    their continuations) are commands: the rest is what they print."""
    commands, lines, continued = [], [], False
    for line in block.splitlines():
        prompted = re.match(r"^\s*\$ ", line)
        if not console or prompted or continued:
            lines.append(strip_comment(line[prompted.end():] if prompted else line))
            continued = lines[-1].rstrip().endswith("\\")
    for line in re.sub(r"\\\n", " ", "\n".join(lines)).splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars="&|;")
        lexer.whitespace_split, lexer.commenters = True, ""
        command: list[str] = []
        for token in [*lexer, ";"]:
            if token and set(token) <= set("&|;"):
                while command and re.match(r"[A-Za-z_]\w*=", command[0]):
                    command.pop(0)
                if command:
                    commands.append(command)
                command = []
            else:
                command.append(token)
    return commands


def page_commands(page: Path) -> list[tuple[list[str], bool]]:
    """(argv, whole) for every command the page shows: those of its bash blocks, and inline code that
    starts like one (whole=False for `nbkit COMMAND` alone, which names a command in a sentence)."""
    prose, blocks = split_page(page.read_text(encoding="utf-8"))
    found = [(argv, True) for language, block in blocks if language in SHELLS
             for argv in shell_commands(block, console=language == "console")]
    commands = "|".join(sorted(command_names()))
    starts = rf"python3? -m nbkit|nbkit (-|({commands})\b)|python3? bench/\S+\.py|bash setup_colab\.sh"
    for span in inline_code(prose):     # `nbkit serving on …` is output, `nbkit serve` a command
        if re.match(rf"({starts})( |$)", span):
            for argv in shell_commands(span):
                found.append((argv, not (len(argv) <= 2 and argv[0] == "nbkit" or argv[:3] == [
                    "python", "-m", "nbkit"] and len(argv) <= 4)))
    return found


@functools.cache
def command_names() -> frozenset[str]:
    return frozenset(subcommands(nbkit_parser()))


def nbkit_arguments(argv: list[str]) -> list[str] | None:
    """The arguments of a `python -m nbkit` / `nbkit` command; None for another program's, and for a
    line such as `nbkit serving on …`, which is what nbkit prints, not a command."""
    if argv[0] == "nbkit":
        word = argv[1] if len(argv) > 1 else "-"
        return argv[1:] if word.startswith("-") or word in command_names() else None
    if re.fullmatch(r"python3?", argv[0]) and argv[1:3] == ["-m", "nbkit"]:
        return argv[3:]
    return None


def subcommands(main: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(action.choices for action in main._actions if isinstance(action, argparse._SubParsersAction))


def options(command: argparse.ArgumentParser) -> set[str]:
    return {flag for action in command._actions for flag in action.option_strings if flag.startswith("--")}


def parse_problem(main: argparse.ArgumentParser, arguments: list[str], whole: bool) -> str | None:
    """None when the arguments parse as `python -m nbkit` would take them, else argparse's complaint."""
    if not whole:
        rest = [a for a in arguments if not a.startswith("-")]
        return None if not rest or rest[0] in subcommands(main) else f"no command {rest[0]!r}"
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            args = main.parse_args(arguments)
    except SystemExit as exit:
        return None if exit.code == 0 else (errors.getvalue().strip().splitlines() or ["exit"])[-1]
    if args.command == "generate" and (args.prompts_file is None) == (not args.prompts):
        return "generate: give PROMPT arguments or --prompts-file FILE (one of them)"   # as cli.main checks
    if args.command == "serve":
        try:
            check_origins(args.cors_origin), check_hosts(args.allow_host)
        except ValueError as error:
            return str(error)
    return None


def script_flags(root: Path, script: str) -> set[str] | None:
    """The options a bench script declares (its add_argument calls, and its helpers' in bench/), or the
    cases a shell script's argument loop takes; None when there is no such script."""
    path = root / script
    if not path.is_file():
        return None
    if path.suffix == ".sh":
        return set(re.findall(r"^\s*(?:[-\w]+\|)*(--[a-z][\w-]*)(?:\|[-\w]+)*\)", path.read_text(), re.M))
    flags: set[str] = set()
    for source in [path, *[p for p in path.parent.glob("_*.py") if p.stem in path.read_text()]]:
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
                flags |= {a.value for a in node.args
                          if isinstance(a, ast.Constant) and str(a.value).startswith("--")}
    return flags


def bad_commands(root: Path) -> list[str]:
    main = nbkit_parser()
    problems = []
    for page in pages(root):
        for argv, whole in page_commands(page):
            shown = f"{page.relative_to(root)}: `{shlex.join(argv)}`"
            arguments = nbkit_arguments(argv)
            if arguments is not None:
                if problem := parse_problem(main, arguments, whole):
                    problems.append(f"{shown}: {problem}")
                continue
            script = argv[1] if len(argv) > 1 and re.fullmatch(r"python3?|bash", argv[0]) else ""
            if re.fullmatch(r"bench/[\w/]+\.py|setup_colab\.sh", script):
                known = script_flags(root, script)
                if known is None:
                    problems.append(f"{shown}: there is no {script}")
                    continue
                problems += [f"{shown}: {script} has no option {flag}" for flag in argv[2:]
                             if flag.startswith("--") and flag.split("=")[0] not in known | {"--help"}]
    return problems


def all_known_flags(root: Path) -> set[str]:
    main = nbkit_parser()
    known = options(main) | {flag for command in subcommands(main).values() for flag in options(command)}
    for script in [*(root / "bench").glob("*.py"), root / "setup_colab.sh"]:
        known |= script_flags(root, str(script.relative_to(root))) or set()
    return known | EXTERNAL_FLAGS


def unknown_flags(root: Path) -> list[str]:
    """Every --flag in the pages' inline code and shell blocks (comments included) that nothing has."""
    known = all_known_flags(root)
    problems = []
    for page in pages(root):
        prose, blocks = split_page(page.read_text(encoding="utf-8"))
        text = "\n".join([*inline_code(prose), *(block for language, block in blocks if language in SHELLS)])
        problems += [f"{page.relative_to(root)}: {flag} is no option of nbkit, bench/ or setup_colab.sh "
                     "(another program's? add it to EXTERNAL_FLAGS)"
                     for flag in sorted(set(FLAG.findall(text))) if flag not in known]
    return problems


def command_of(main: argparse.ArgumentParser, arguments: list[str]) -> str | None:
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            return main.parse_args(arguments).command
        except SystemExit:
            return None


def undocumented(root: Path) -> list[str]:
    """Options no page of docs/ names, and commands no page shows an example of."""
    docs = "\n".join(page.read_text(encoding="utf-8") for page in pages(root))
    named = set(FLAG.findall(docs))
    main = nbkit_parser()
    examples = {command_of(main, arguments) for page in pages(root) for argv, whole in page_commands(page)
                if whole for arguments in [nbkit_arguments(argv)] if arguments is not None}
    problems = [f"`nbkit {flag}` is in no page" for flag in sorted(options(main) - named - {"--help"})]
    for name, command in subcommands(main).items():
        problems += [f"`nbkit {name} {flag}` is in no page"
                     for flag in sorted(options(command) - named - {"--help"})]
        if name not in examples:
            problems.append(f"no page shows a `python -m nbkit {name} …` command")
    return problems


REPOSITORY_PATH = re.compile(r"(?<![\w/.-])((?:nbkit|tests|bench|deploy|notebooks|\.ci)/[\w./-]*[\w/])")
DOTTED = re.compile(r"(?<![\w.])nbkit(?:\.\w+)+")
IMPORT = re.compile(r"^\s*from (nbkit(?:\.\w+)*) import (\([^)]*\)|[\w, ]+)", re.M)
# The short names the pages use, as `from nbkit import runs` gives them, and the pipeline's `pipe.`.
ALIASES = {"runs": "nbkit.output.runs", "ui": "nbkit.notebook.ui", "hub": "nbkit.weights.hub",
           "colab": "nbkit.notebook.colab", "registry": "nbkit.weights.registry"}
ALIASED = re.compile(rf"(?<![\w./])({'|'.join(ALIASES)})\.(?!py\b)(\w+)")   # not `runs.py`
MEMBER = re.compile(r"(?<![\w./])(?:pipe|Pipeline)\.(\w+)")


def module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


def defines(root: Path, module: str, name: str) -> bool:
    """Whether `module` has `name` at its top level (def, class, assignment, import, a sub-module, or
    for `nbkit` itself, one of its lazily imported short names)."""
    path = module_file(root, module)
    if path is None:
        return False
    lazy = module == "nbkit" and f'"{name}"' in path.read_text()        # nbkit's _LAZY short names
    if lazy or module_file(root, f"{module}.{name}") is not None:
        return True
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return name in names


def class_defines(root: Path, module: str, class_name: str, name: str) -> bool:
    path = module_file(root, module)
    classes = [node for node in ast.parse(path.read_text()).body if isinstance(node, ast.ClassDef)
               and node.name == class_name] if path else []
    return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name
               or isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == name
               for cls in classes for node in cls.body)


def stale_names(root: Path) -> list[str]:
    """Repository paths the pages name that do not exist, and nbkit names (`from nbkit.x import y`,
    `nbkit.x.y`) that the code does not define: the pages follow files and functions that move."""
    problems = []
    for page in pages(root):
        text, where = page.read_text(encoding="utf-8"), page.relative_to(root)
        problems += [f"{where}: {path} does not exist" for path in sorted(set(REPOSITORY_PATH.findall(text)))
                     if not (root / path).exists() and not path.startswith(MADE_AT_RUN_TIME)]
        names = {(module, name.strip()) for module, names in IMPORT.findall(text)
                 for name in names.strip("()").replace("\n", " ").split(",") if name.strip()}
        for dotted in set(DOTTED.findall(text)):
            parts = dotted.split(".")
            modules = [i for i in range(1, len(parts) + 1) if module_file(root, ".".join(parts[:i]))]
            if modules[-1] < len(parts):
                names.add((".".join(parts[:modules[-1]]), parts[modules[-1]]))
        names |= {(ALIASES[alias], name) for alias, name in ALIASED.findall(text)}
        problems += [f"{where}: {module} has no {name}" for module, name in sorted(names)
                     if not defines(root, module, name)]
        problems += [f"{where}: Pipeline has no {name}" for name in sorted(set(MEMBER.findall(text)))
                     if not class_defines(root, "nbkit.generation.pipeline", "Pipeline", name)]
    return problems


def unmapped_modules(root: Path) -> list[str]:
    """Modules of nbkit/ that docs/architecture.md, the package map, does not list."""
    page = root / "docs" / "architecture.md"
    listed = set(REPOSITORY_PATH.findall(page.read_text(encoding="utf-8"))) if page.is_file() else set()
    return [f"docs/architecture.md does not list {path}" for path in sorted(
        str(p.relative_to(root)) for p in (root / "nbkit").rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")) if path not in listed]


def readme_problems(root: Path) -> list[str]:
    lines = (root / "README.md").read_text(encoding="utf-8").splitlines()
    problems = [f"README.md has {len(lines)} lines, more than {MAX_README_LINES}: move reference material "
                "into a docs/ page"] if len(lines) > MAX_README_LINES else []
    if TEST_LINE not in lines:
        problems.append(f"README.md lacks the test line on a line of its own: {TEST_LINE}")
    return problems


CHECKS = {"readme": readme_problems, "links": broken_links, "commands": bad_commands, "flags": unknown_flags,
          "documented": undocumented, "names": stale_names, "architecture": unmapped_modules}


@pytest.mark.parametrize("check", CHECKS)
def test_the_docs_agree_with_the_code(check):
    assert CHECKS[check](ROOT) == []


def test_the_pages_show_commands_and_links_to_check():
    commands = [argv for page in pages(ROOT) for argv, _ in page_commands(page)]
    assert sum(nbkit_arguments(argv) is not None for argv in commands) >= 30
    assert any(argv[1:2] == ["bench/bench_serve.py"] for argv in commands)
    assert len(pages(ROOT)) >= 12 and (ROOT / "docs" / "command-line.md").is_file()


@pytest.fixture
def copy(tmp_path):
    """A copy of README.md and docs/ to plant mistakes in; everything else linked in place."""
    for entry in ROOT.iterdir():
        if entry.name not in ("README.md", "docs", ".git"):
            (tmp_path / entry.name).symlink_to(entry)
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    return tmp_path


def plant(root: Path, page: str, text: str, replace: str | None = None) -> None:
    path = root / page
    body = path.read_text(encoding="utf-8")
    path.write_text(body.replace(replace, text) if replace else body + text, encoding="utf-8")


def test_each_check_finds_a_planted_mistake(copy):
    assert {name: check(copy) for name, check in CHECKS.items()} == {name: [] for name in CHECKS}

    plant(copy, "README.md", "\n[gone](docs/no-such-page.md) and [here](docs/server.md#no-such-heading)\n")
    plant(copy, "docs/upscale.md",   # the comment's \\ continues nothing; the other two join lines
          "\n```bash\npython -m nbkit upscale a.png --made-up-flag   # a comment \\\n"
          "XLA_FLAGS=x python -m nbkit generate \\\n  --prompts-file p.txt 'a b' \\\n"
          "  && python bench/bench_serve.py --clients 2 --no-such-bench-flag\n```\n"
          "Also `python -m nbkit frobnicate` and `--imaginary` and `nbkit serve --cors-origin example.com`."
          "\n")
    plant(copy, "docs/server.md", "--upscalor", replace="--upscaler")
    plant(copy, "README.md", TEST_LINE.replace("ruff", "ruf"), replace=TEST_LINE)
    assert broken_links(copy) == ["README.md: link to docs/no-such-page.md: no docs/no-such-page.md",
                                  "README.md: link to docs/server.md#no-such-heading: docs/server.md has no "
                                  "heading #no-such-heading"]
    commands = bad_commands(copy)
    assert [c.split("`")[1] for c in commands] == [
        "python -m nbkit upscale a.png --made-up-flag", "python -m nbkit generate --prompts-file p.txt 'a b'",
        "python bench/bench_serve.py --clients 2 --no-such-bench-flag", "python -m nbkit frobnicate",
        "nbkit serve --cors-origin example.com"], commands
    assert "unrecognized arguments: --made-up-flag" in commands[0] and "one of them" in commands[1]
    assert all(c.startswith("docs/upscale.md: ") for c in commands)
    assert unknown_flags(copy) == [
        f"docs/{page}: {flag} is no option of nbkit, bench/ or setup_colab.sh (another program's? add it "
        "to EXTERNAL_FLAGS)" for page, flag in (("server.md", "--upscalor"), ("upscale.md", "--imaginary"),
                                                 ("upscale.md", "--made-up-flag"),
                                                 ("upscale.md", "--no-such-bench-flag"))]
    assert readme_problems(copy) == [f"README.md lacks the test line on a line of its own: {TEST_LINE}"]
    plant(copy, "README.md", "\n" * MAX_README_LINES)
    assert readme_problems(copy)[0].startswith("README.md has ")


def test_an_undocumented_option_or_command_is_found(copy):
    for page in pages(copy):
        plant(copy, str(page.relative_to(copy)), "--keep-rowz", replace="--keep-rows")
        plant(copy, str(page.relative_to(copy)), "python -m nbkit inf0", replace="python -m nbkit info")
        plant(copy, str(page.relative_to(copy)), "--debug inf0", replace="--debug info")
    assert undocumented(copy) == ["`nbkit vary --keep-rows` is in no page",      # nor do the examples parse:
                                  "no page shows a `python -m nbkit vary …` command",
                                  "no page shows a `python -m nbkit info …` command"]


def test_markdown_reading():
    assert slug("Server: `nbkit serve`") == "server-nbkit-serve" and slug("How fast, and 5 million") == \
        "how-fast-and-5-million"
    assert shell_commands('A=1 B="2 3" nbkit info # --x\nnbkit a \\\n  "b c" && nbkit d; e | f') == [
        ["nbkit", "info"], ["nbkit", "a", "b c"], ["nbkit", "d"], ["e"], ["f"]]
    assert shell_commands("$ nbkit a \\\n  b\nnbkit: error: c\n  $ nbkit d", console=True) == [
        ["nbkit", "a", "b"], ["nbkit", "d"]]
    assert nbkit_arguments(["nbkit", "serving", "on"]) is None
    assert nbkit_arguments(["nbkit", "info"]) == ["info"]
    prose, blocks = split_page("a `x`\n  ```bash\n  nbkit info\n  ```\nb [l](t.md)\n````\n```\n````\n")
    assert blocks == [("bash", "  nbkit info"), ("", "```")] and LINK.findall(prose) == ["t.md"]


def test_a_moved_file_or_renamed_function_is_found(copy):
    plant(copy, "docs/pipeline.md", "\n`nbkit.output.runs.no_such_function`, `runs.gone_away(x)`, "
          "`pipe.vanish()`, `nbkit/no_such_module.py`, `nbkit.png`, `hub.py` and\n\n```python\n"
          "from nbkit.generation.events import (Batch,\n    Nope)\nfrom nbkit.nowhere import x\n```\n")
    assert stale_names(copy) == [
        "docs/pipeline.md: nbkit/no_such_module.py does not exist",
        "docs/pipeline.md: nbkit has no nowhere",
        "docs/pipeline.md: nbkit.generation.events has no Nope",
        "docs/pipeline.md: nbkit.nowhere has no x",
        "docs/pipeline.md: nbkit.output.runs has no gone_away",
        "docs/pipeline.md: nbkit.output.runs has no no_such_function",
        "docs/pipeline.md: Pipeline has no vanish"]


def test_a_module_missing_from_the_package_map_is_found(copy):
    plant(copy, "docs/architecture.md", "", replace="nbkit/png.py")
    assert unmapped_modules(copy) == ["docs/architecture.md does not list nbkit/png.py"]
