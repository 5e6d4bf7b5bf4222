"""`python -m nbkit` (or `nbkit`): generate, vary, extend, fill, reproduce, rerank, download, info, upscale,
serve — one module a command, each only parsing and printing.

`commands` is the parser of every command and `main`; `common` what several commands share (prompts files,
checking models before any is loaded, loading the pipeline); `display` how a run is shown (its bar). A
command builds a spec (`Generate`, `Vary`, `Extend`, `Fill`) and hands it to the one run driver
(`nbkit.output.runs.save_run`).

Exit codes: 0 success, 2 bad usage (argparse), 1 failure with one clear line (`--debug` shows the
traceback).
"""

from nbkit.cli.commands import main, parser

__all__ = ["main", "parser"]
