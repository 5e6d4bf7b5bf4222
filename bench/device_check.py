"""The GPU check: in one run of at most about 5 minutes, what nbkit does on this accelerator, beside
min-dalle on the same one, against the memory-bandwidth bound the run measures itself.

    bash bench/device_check.sh            # on the GPU (installs the carried wheels first)
    bash bench/device_check.sh --cpu      # the same code paths at tiny sizes, here, in under a minute

Each part runs in its own process (bench/device_worker.py, bench/peers/min_dalle_device.py, pytest),
so that each has its own first call and peak memory, and a part cut off by the time budget still
hands back the rows it finished. Most important first: Mega bfloat16 (1, 4, 9, 16 images) and
min-dalle's headline, Mega 3×3; mini bfloat16 in a process with an empty persistent compilation
cache, then a second process on that cache (what a restarted Colab's first image costs); min-dalle
mini; the golden tests on the device (float32 and bfloat16); then float32. A part that the budget
leaves no time for gets a "skipped: time budget" row. This process imports no jax: it holds no
device memory while the parts run. Writes the table to bench/out/device_check.md and .json.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
REPO = HERE.parent
GIB = 2**30
COLUMNS = ["part", "model", "dtype", "images", "tokens/s", "tokens s", "first call s", "compile s",
           "VQGAN s", "peak GiB", "bound s", "× bound", "note"]
GPU_GOLDEN = (["-m", "golden", *(f"tests/{name}.py" for name in (
                  "models/test_dallebart", "models/test_vqgan", "models/test_vqgan_encode",
                  "generation/test_sampling", "text/test_tokenizer", "weights/test_checkpoint",
                  "models/test_clip", "text/test_text", "models/test_esrgan", "output/test_rerank"))],
              ["-k", "bfloat16", "tests/models/test_dallebart.py", "tests/models/test_vqgan.py",
               "tests/output/test_rerank.py"])
CPU_GOLDEN = (["-m", "golden", "tests/models/test_vqgan.py"],
              ["-k", "bfloat16", "tests/models/test_vqgan.py"])


def plan(cpu: bool) -> list[dict]:
    """The parts, most important first. `cap_s`: the most time a part may take (less where less is left);
    a part is not started with under `least` seconds left. Batches run in the order given (the headline
    first); a row after a larger batch shows no peak memory (the runtime's peak cannot be reset)."""
    least = 5 if cpu else 25
    job = lambda model, dtype, batches, cap, cache=False, label="nbkit": {
        "kind": "nbkit", "model": model, "dtype": dtype, "batches": batches, "cache": cache, "label": label,
        "cap_s": cap, "min_s": least}
    peer = lambda model, dtype, grid, cap: {"kind": "min-dalle", "model": model, "dtype": dtype, "grid": grid,
                                            "cap_s": cap, "min_s": least}
    golden = lambda args, cap: {"kind": "golden", "args": args, "cap_s": cap, "min_s": least}
    second = "nbkit, 2nd process"
    if cpu:
        return [job("mini", "float32", "1,4", 60, True), job("mini", "float32", "4", 30, True, second),
                job("mega", "bfloat16", "1", 30), peer("mini", "float32", 1, 30), golden(CPU_GOLDEN, 40)]
    return [job("mega", "bfloat16", "9,16,1,4", 100), peer("mega", "bfloat16", 3, 45),
            job("mini", "bfloat16", "4,1,9,16", 60, True), job("mini", "bfloat16", "4", 25, True, second),
            golden(GPU_GOLDEN, 60), peer("mini", "bfloat16", 2, 25),
            job("mega", "float32", "9,1,4,16", 90), peer("mega", "float32", 3, 45),
            job("mini", "float32", "4,1,9,16", 60), peer("mini", "float32", 2, 25)]


def run_lines(command: list[str], timeout: float) -> tuple[list[dict], str]:
    """The JSON lines a part printed (also when the budget stopped it), and why it stopped short ('')."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=max(timeout, 1), cwd=REPO)
        stdout, stderr, why = out.stdout, out.stderr, "" if out.returncode == 0 else f"exit {out.returncode}"
    except subprocess.TimeoutExpired as stopped:
        as_text = lambda value: value.decode(errors="replace") if isinstance(value, bytes) else value or ""
        stdout, stderr, why = as_text(stopped.stdout), as_text(stopped.stderr), "stopped: time budget"
    lines = []
    for line in stdout.splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    if why and why != "stopped: time budget":
        last = [line for line in stderr.strip().splitlines() if line.strip()]
        why += ": " + (last[-1][:300] if last else "no message")
    return lines, why


def nbkit_rows(job: dict, lines: list[dict], why: str, bandwidth: float, cpu: bool) -> list[dict]:
    header = next((line["header"] for line in lines if "header" in line), {})
    rows = []
    for line in lines:
        if "row" in line:
            r = line["row"]
            per_step = r["bytes_per_step"]
            bound = r["steps"] * per_step["weights"] / bandwidth
            bound_all = r["steps"] * (per_step["weights"] + per_step["cache"]) / bandwidth
            seconds = r["jax_compile_s"]
            note = (f"XLA compile {seconds.get('backend_compile_duration', 0):.1f} s, trace "
                    f"{seconds.get('jaxpr_trace_duration', 0):.1f} s, lower "
                    f"{seconds.get('jaxpr_to_mlir_module_duration', 0):.1f} s; cache hits {r['cache_hits']}; "
                    f"bound with KV cache {bound_all:.3g} s; weights built in {r['build_s']:.1f} s")
            if r["bucket"] != r["images"]:
                note = f"runs as {r['bucket']}; " + note
            if r["peak_kind"] != "device":
                note += f"; peak is {r['peak_kind']}"
            peak = r["peak_bytes"] / GIB if r["peak_is_own"] else None
            rows.append({"part": job["label"], "model": header.get("model", job["model"]),
                         "dtype": job["dtype"], "images": r["images"], "tokens/s": r["tokens_per_s"],
                         "tokens s": r["tokens_s"],
                         "first call s": r["first_call_s"], "compile s": r["compile_s"],
                         "VQGAN s": r["pixels_s"], "peak GiB": peak, "bound s": bound,
                         "× bound": r["tokens_s"] / bound, "note": note,
                         "weights_per_step": per_step["weights"], "raw": r})
        elif "skipped" in line:
            rows.append(skipped_row(job, f"skipped: {line['why']}", images=line["skipped"]))
    if why:
        done = {row["images"] for row in rows}
        rows += [skipped_row(job, why, images=int(b)) for b in job["batches"].split(",")
                 if int(b) not in done]
    return rows


def skipped_row(job: dict, why: str, images: int | str = "–") -> dict:
    label = {"nbkit": job.get("label"), "min-dalle": "min-dalle", "golden": "golden tests"}[job["kind"]]
    return {"part": label, "model": job.get("model", "–"), "dtype": job.get("dtype", "–"), "images": images,
            "note": why}


def min_dalle_python(cpu: bool) -> Path:
    """The image's own python on the GPU (torch there; min-dalle from the carried wheels); here, the
    venv that bench/peers/setup_min_dalle.sh makes."""
    return HERE / "peers" / ".venv-min-dalle" / "bin" / "python" if cpu else Path(sys.executable)


def min_dalle_row(job: dict, python: Path, timeout: float, cpu: bool, rows: list[dict],
                  bandwidth: float) -> dict:
    if not python.exists():
        return skipped_row(job, f"skipped: min-dalle not installed ({python} is missing; "
                                "bash bench/peers/setup_min_dalle.sh makes it)")
    command = [str(python), str(HERE / "peers" / "min_dalle_device.py"), "--dtype", job["dtype"],
               "--grid", str(job["grid"]), *(["--tiny"] if cpu else []),
               *(["--mega"] if job["model"] == "mega" else [])]
    lines, why = run_lines(command, timeout)
    result = next((line for line in lines if line.get("impl") == "min-dalle"), None)
    if result is None:
        if "not installed" in why:
            return skipped_row(job, f"skipped: min-dalle not installed ({why.split(': ', 1)[-1]})")
        return skipped_row(job, why or "failed: no result")
    same = [row for row in rows if row.get("weights_per_step") and row["model"] == job["model"]
            and row["dtype"] == job["dtype"] and not cpu]
    weights = same[0]["weights_per_step"] if same else result["decoder_weight_bytes"]
    bound = 256 * weights / bandwidth
    nbkit = [row for row in same if row["images"] == result["images"]]
    note = f"torch {result['versions'].get('torch')}, weights built in {result['build_s']:.1f} s"
    if nbkit:
        note += f"; nbkit ÷ min-dalle time: {nbkit[0]['tokens s'] / result['tokens_s']:.2f}"
    if result["peak_kind"] != "device":
        note += f"; peak is {result['peak_kind']}"
    return {"part": "min-dalle", "model": "tiny" if cpu else job["model"], "dtype": job["dtype"],
            "images": result["images"], "tokens/s": result["tokens_per_s"], "tokens s": result["tokens_s"],
            "first call s": result["first_call_s"], "peak GiB": result["peak_bytes"] / GIB, "bound s": bound,
            "× bound": result["tokens_s"] / bound, "note": note, "raw": result}


def golden_rows(job: dict, timeout: float) -> list[dict]:
    """Two pytest runs (float32 goldens, then the bfloat16 tests), counted from pytest's verbose lines, so
    that a run stopped by the budget still says how far it got."""
    rows, began_all = [], time.time()
    for share, label, args in zip((2 / 3, 1.0), ("float32 (golden)", "bfloat16"), job["args"], strict=True):
        left = timeout * share - (time.time() - began_all)
        # One process (-n 0, not pyproject's two workers): its lines are the ones counted below.
        command = [sys.executable, "-m", "pytest", "-n", "0", "-v", "-p", "no:cacheprovider", *args]
        began = time.perf_counter()
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=max(left, 1), cwd=REPO)
            stdout, stopped = out.stdout, ""
            if out.returncode not in (0, 1):
                last = (stdout.strip().splitlines() or ["?"])[-1][:200]
                stopped = f"; pytest exit {out.returncode}: {last}"
        except subprocess.TimeoutExpired as expired:
            stdout = expired.stdout.decode(errors="replace") if isinstance(expired.stdout, bytes) \
                else expired.stdout or ""
            stopped = "; stopped: time budget"
        results = re.findall(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED)", stdout, re.MULTILINE)
        count = lambda *words, results=results: sum(1 for _, word in results if word in words)
        failed_names = [name.split("::", 1)[1] for name, word in results if word in ("FAILED", "ERROR")]
        note = (f"{count('PASSED')} passed, {count('FAILED', 'ERROR')} failed, {count('SKIPPED')} skipped "
                f"in {time.perf_counter() - began:.1f} s" + stopped
                + (f"; failed: {', '.join(failed_names[:4])}" if failed_names else ""))
        rows.append({"part": "golden tests", "model": "tiny fixtures", "dtype": label, "images": "–",
                     "note": note, "passed": count("PASSED"), "failed": count("FAILED", "ERROR")})
    return rows


def cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if value < 100 else f"{value:.0f}"
    return "–" if value is None else str(value)


def markdown(header: list[str], rows: list[dict], notes: list[str]) -> str:
    table = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    table += ["| " + " | ".join(cell(row.get(column)) for column in COLUMNS) + " |" for row in rows]
    return "\n".join([*header, "", *table, "", *notes, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU: every code path, quickly")
    parser.add_argument("--budget", type=float, help="seconds for the whole check (default 280; --cpu 120); "
                        "each part's cap grows in proportion, so a loaded machine can be given more")
    parser.add_argument("--out", type=Path, default=HERE / "out", help="folder for device_check.md/.json")
    args = parser.parse_args()
    started = time.time()
    default_budget = 120 if args.cpu else 280
    budget = args.budget or default_budget
    deadline = started + budget
    stretch = max(1.0, budget / default_budget)        # a longer budget gives every part more time
    worker = [sys.executable, str(HERE / "device_worker.py")]
    lines, why = run_lines([*worker, "--bandwidth", "64" if args.cpu else "2048"], deadline - time.time())
    measured = next((line["bandwidth"] for line in lines if "bandwidth" in line), None)
    if measured is None:
        sys.exit(f"error: the bandwidth measurement failed ({why}); nothing else would run either")
    bandwidth = measured["bandwidth"]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as cache:
        for job in plan(args.cpu):
            left = min(job["cap_s"] * stretch, deadline - time.time())
            if left < job["min_s"]:
                if job["kind"] == "golden":
                    rows.append(skipped_row(job, "skipped: time budget"))
                elif job["kind"] == "nbkit":
                    rows += [skipped_row(job, "skipped: time budget", int(b))
                             for b in job["batches"].split(",")]
                else:
                    rows.append(skipped_row(job, "skipped: time budget", job["grid"] ** 2))
                continue
            print(f"[{time.time() - started:5.0f} s] {job['kind']} {job.get('model', '')} "
                  f"{job.get('dtype', '')}", file=sys.stderr, flush=True)
            if job["kind"] == "nbkit":
                command = [*worker, "--model", job["model"], "--dtype", job["dtype"], "--batches",
                           job["batches"], "--deadline", str(time.time() + left - 3),
                           *(["--tiny"] if args.cpu else []),
                           *(["--compilation-cache", cache] if job["cache"] else [])]
                rows += nbkit_rows(job, *run_lines(command, left), bandwidth, args.cpu)
            elif job["kind"] == "min-dalle":
                rows.append(min_dalle_row(job, min_dalle_python(args.cpu), left, args.cpu, rows, bandwidth))
            else:
                rows += golden_rows(job, left)
    header = [f"# nbkit {'CPU (tiny sizes)' if args.cpu else 'GPU'} check", "",
              f"Measured {time.strftime('%Y-%m-%d', time.gmtime(started))} on {measured['device']} "
              f"({measured['backend']}), jax {measured['jax']}, with `bash bench/device_check.sh"
              f"{' --cpu' if args.cpu else ''}` in {time.time() - started:.0f} s. Copy bandwidth "
              f"{bandwidth / 1e9:.1f} GB/s (x + 1 over {measured['bytes'] / 2**20:.0f} MiB, read + write)."]
    notes = ["- Random weights of the real sizes" + (" (here: the tiny fixtures)" if args.cpu else "")
             + "; one prompt, condition scale 10, top-k 50. `tokens s`: prompt → image tokens, the second "
             "call; `first call s`: the first call of that batch size in its process (compiling its "
             "programs); `compile s`: first call − second call.",
             "- `bound s`: 256 decoder steps × the weight bytes a step reads (decoder and lm_head, without "
             "the embedding tables and the once-only cross-attention projections) ÷ the copy bandwidth; "
             "`× bound`: tokens s ÷ bound s. The note's bound adds the KV caches a step reads.",
             "- `nbkit, 2nd process`: a new process on the persistent compilation cache that the row above "
             "it filled — what a restarted session's first image costs after its weights are loaded.",
             "- min-dalle: its own torch code on the same device, random weights, prompt → image tokens "
             "(no VQGAN decode); batches 9 and 16 are min-dalle's 3×3 and 4×4 grids."]
    report = markdown(header, rows, notes)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "device_check.md").write_text(report)
    (args.out / "device_check.json").write_text(json.dumps(
        {"bandwidth": measured, "rows": rows, "seconds": time.time() - started, "cpu": args.cpu}, indent=1))


if __name__ == "__main__":
    main()
