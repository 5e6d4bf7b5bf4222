"""`nbkit serve` under load: K clients at once, each asking for M images.

The front runs in this process (as `nbkit.colab.serve` runs it: uvicorn in a thread, a worker thread per
replica); the clients are threads that talk HTTP to it, each submitting a job and following its event
stream, so previews are decoded as for a watching page. Three ways:

- default: the one in-process Pipeline; the same images one client at a time, then all at once;
  with --overload, the share of jobs refused with 429 while every accepted job still finishes.
- --replicas N: N Ray Serve replicas on a local Ray (the tiny models), each pinned to its own CPU core;
  --rounds bursts of K clients at once (after one warm-up burst that compiles): images/s. Run it with 1
  and with 2 to see the speed-up.
- --ceiling: N stand-in replicas in this process that return their images at once (no model), so what is
  measured is the front alone: accepting jobs, saving PNGs and manifest lines, streaming events and
  serving each image back. The images/s where the front, not generation, is the limit.

Every way prints p50/p95 time to the first preview and to the last image, and images lost (asked for but
not saved with a manifest line: must be 0), and the machine's load average before and after.

    python bench/bench_serve.py --tiny                      # the tiny test models: seconds
    python bench/bench_serve.py --clients 4 --images 1      # mini's size, random weights: minutes on CPU
    python bench/bench_serve.py --tiny --overload
    python bench/bench_serve.py --replicas 1 --clients 8 --images 2 --rounds 3
    python bench/bench_serve.py --replicas 2 --clients 8 --images 2 --rounds 3
    python bench/bench_serve.py --ceiling --clients 16 --images 4 --rounds 5
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from bench_generate import random_pipeline

from nbkit.generation.events import Batch, Done, GeneratedImage, Progress
from nbkit.generation.pipeline import Pipeline
from nbkit.server.launch import launch
from nbkit.server.options import ServerOptions
from nbkit.server.replicas.base import READY, ModelFacts, Replica, ReplicaPool

GOLDEN = Path(__file__).parent.parent / "tests" / "fixtures" / "golden"


def post_job(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url + "api/jobs", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def follow(url: str, job_id: str, started: float) -> dict:
    """Reads a job's event stream to its end: seconds from `started` to the first preview and to the end."""
    first_preview = None
    with urllib.request.urlopen(f"{url}api/jobs/{job_id}/events", timeout=3600) as response:
        kind = None
        for raw in response:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: "):])
                if kind == "progress" and data.get("previews") and first_preview is None:
                    first_preview = time.perf_counter() - started
                if kind in ("done", "failed", "cancelled"):
                    return {"state": kind, "first_preview_s": first_preview,
                            "last_image_s": time.perf_counter() - started, "images": data["images_done"],
                            "run": data["run"], "urls": [image["url"] for image in data["images"]]}
    raise RuntimeError(f"job {job_id}: its event stream ended without an end")


def fetch_images(url: str, result: dict) -> int:
    """GETs every image of a finished job, as a page shows them: bytes read."""
    read = 0
    for address in result["urls"]:
        with urllib.request.urlopen(url + address.lstrip("/"), timeout=60) as answer:
            read += len(answer.read())
    return read


def client(url: str, body: dict, start: threading.Barrier | None, fetch: bool = False) -> dict:
    if start is not None:
        start.wait()
    began = time.perf_counter()
    status, answer = post_job(url, body)
    if status == 429:
        return {"state": "refused", "retry_after": answer}
    if status != 202:
        raise RuntimeError(f"POST /api/jobs answered {status}: {answer}")
    result = {**follow(url, answer["id"], began), "asked": body["n_images"]}
    if fetch:
        fetch_images(url, result)
    return result


def run_clients(url: str, bodies: list[dict], together: bool,
                fetch: bool = False) -> tuple[float, list[dict]]:
    """Wall seconds and each client's result: all at once, or one after the other (`fetch`: each client
    also downloads its images)."""
    began = time.perf_counter()
    if together:
        start = threading.Barrier(len(bodies))
        with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
            results = list(pool.map(lambda body: client(url, body, start, fetch), bodies))
    else:
        results = [client(url, body, None) for body in bodies]
    return time.perf_counter() - began, results


def load_average() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


class StandIn(Replica):
    """A replica that returns its images at once (fixed pixels, made-up tokens): the front alone is
    measured."""

    PIXELS = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)

    def __init__(self, name: str, max_batch: int):
        super().__init__(name)
        self.state, self.device = READY, "stand-in"
        self.model = ModelFacts("stand-in", max_batch, 256, 16384, 1.0, 50, 1.0)

    def _events(self, tasks, settings, progress_every, delivered):
        tokens = np.zeros(256, np.int32)
        yield Progress(0, 256 * len(tasks), 0, len(tasks), 0.0, False, 1,
                       np.zeros((len(tasks), 256), np.int32),
                       lambda _tokens: [GeneratedImage(t.prompt, t.prompt_index, t.image_index, t.seed,
                                                       tokens, self.PIXELS) for t in tasks],
                       batch=range(len(tasks)))
        images = [GeneratedImage(t.prompt, t.prompt_index, t.image_index, t.seed, tokens, self.PIXELS)
                  for t in tasks]
        yield Batch(images, len(tasks), len(tasks), 0.0, range(len(tasks)))
        yield Done(len(tasks), {})


def bursts(server, out: Path, args, label: str) -> None:
    """--rounds bursts of --clients at once (after one warm-up burst): images/s, latencies, lost."""
    total = args.clients * args.images
    run_clients(server.url, bodies(args.clients, args.images, "warm-up", 5000), together=True)
    print(f"measuring ({load_average()}) ...", flush=True)
    wall, results = 0.0, []
    for round_ in range(args.rounds):
        seconds, made = run_clients(server.url, bodies(args.clients, args.images, "a lighthouse",
                                                       10_000 * (round_ + 1)), True, fetch=args.ceiling)
        wall += seconds
        results += made
    per_replica = {r.name: r.counts.images for r in server.pool.replicas}
    print(f"{label}: {args.rounds} × {args.clients} clients × {args.images} image(s): "
          f"{args.rounds * total / wall:.2f} images/s ({wall:.1f} s); "
          f"first preview {percentiles([r['first_preview_s'] for r in results])}, "
          f"last image {percentiles([r['last_image_s'] for r in results])}; "
          f"images per replica {per_replica}; images lost: {lost_images(out, results)}; {load_average()}",
          flush=True)


def lost_images(out: Path, results: list[dict]) -> int:
    """Images an accepted job asked for that are not on disk with their manifest line."""
    lost = 0
    for result in results:
        if result["state"] == "refused":
            continue
        folder = out / result["run"]
        entries = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()
                   if line.strip()] if (folder / "manifest.jsonl").exists() else []
        on_disk = sum((folder / entry["file"]).is_file() for entry in entries)
        lost += max(0, result["asked"] - on_disk)
    return lost


def percentiles(values: list[float | None]) -> str:
    values = sorted(v for v in values if v is not None)
    if not values:
        return "–"
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return f"p50 {statistics.median(values):.1f} s, p95 {p95:.1f} s"


def bodies(clients: int, images: int, prompt: str, first_seed: int) -> list[dict]:
    return [{"prompt": f"{prompt}, view {n}", "n_images": images, "seed": first_seed + n}
            for n in range(clients)]


def replicas_main(args) -> None:
    from nbkit.server.replicas.deployment import ReplicaModel
    from nbkit.server.replicas.ray_pool import PoolConfig, RayPool

    max_batch = args.max_batch or 4
    cores = sorted(os.sched_getaffinity(0))
    model = ReplicaModel(str(GOLDEN / "dallebart-tiny"), str(GOLDEN / "vqgan-tiny"), "float32", max_batch,
                         compilation_cache=args.compilation_cache)
    config = PoolConfig(args.replicas, model, {"num_cpus": 1}, num_cpus=args.replicas,
                        cpu_cores=[[cores[i % len(cores)]] for i in range(args.replicas)])
    print(f"tiny test models, float32, {args.replicas} Ray Serve replica(s), each pinned to one core; "
          f"max_batch {max_batch}, previews every {args.preview_every or '–'} tokens", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        options = ServerOptions(out=out, max_queue=max(64, 3 * args.clients), max_images=max(16, args.images),
                                preview_every=args.preview_every or None, model="tiny", clip=None)
        server = launch(options, 0, lambda: RayPool(config, lambda line: None), background=True,
                        log=lambda line: None)
        try:
            server.pool.wait_ready(args.replicas, timeout=600)
            bursts(server, out, args, f"{args.replicas} replica(s)")
        finally:
            server.stop()


def ceiling_main(args) -> None:
    max_batch = args.max_batch or 8
    pool = ReplicaPool([StandIn(f"stand-in-{n}", max_batch) for n in range(args.replicas or 4)])
    print(f"the front alone: {len(pool.replicas)} stand-in replica(s) that return {max_batch} images at "
          "once; each client also downloads its images", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        options = ServerOptions(out=out, max_queue=max(64, 3 * args.clients), max_images=max(16, args.images),
                                preview_every=args.preview_every or None, model="stand-in", clip=None)
        server = launch(options, 0, lambda: pool, background=True, log=lambda line: None)
        try:
            bursts(server, out, args, "front ceiling")
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4, help="clients at once (default 4)")
    parser.add_argument("--images", type=int, default=1, help="images each client asks for (default 1)")
    parser.add_argument("--tiny", action="store_true", help="the tiny test models instead of mini's size")
    parser.add_argument("--max-batch", type=int, help="server's batch size (default: clients × images)")
    parser.add_argument("--preview-every", type=int, default=64,
                        help="tokens between previews while a client watches (default 64; 0: none)")
    parser.add_argument("--overload", action="store_true",
                        help="also: 3 × clients at once against --max-queue = clients")
    parser.add_argument("--replicas", type=int, help="N Ray Serve replicas (tiny models), one core each")
    parser.add_argument("--ceiling", action="store_true",
                        help="the front alone, with stand-in replicas that return at once (--replicas of "
                             "them, default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="bursts measured (--replicas, --ceiling)")
    parser.add_argument("--compilation-cache", help="compiled programs shared by the replicas")
    args = parser.parse_args()
    if args.ceiling:
        return ceiling_main(args)
    if args.replicas:
        return replicas_main(args)

    max_batch = args.max_batch or args.clients * args.images
    if args.tiny:
        pipe = Pipeline.from_pretrained(GOLDEN / "dallebart-tiny", GOLDEN / "vqgan-tiny", dtype="float32",
                                        max_batch=max_batch, progress=False)
    else:
        pipe = random_pipeline("mini", jnp.float32, max_batch=max_batch)
    device = f"{jax.devices()[0].device_kind} ({jax.default_backend()}, {jax.device_count()} device(s))"
    print(f"{'tiny test models' if args.tiny else 'DALL·E mini size, random weights'}, float32, on {device}; "
          f"{args.clients} clients × {args.images} image(s), max_batch {pipe.max_batch}, previews every "
          f"{args.preview_every or '–'} tokens", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        options = ServerOptions(out=out, max_queue=max(64, 3 * args.clients), max_images=max(16, args.images),
                                preview_every=args.preview_every or None, model=pipe.name, clip=None)
        server = launch(options, 0, lambda: pipe, background=True, log=lambda line: None)
        try:
            print("compiling: one job of each batch size ...", flush=True)
            total = args.clients * args.images
            run_clients(server.url, bodies(1, args.images, "warm-up", 900), together=False)
            run_clients(server.url, bodies(1, total, "warm-up", 1000), together=False)
            asked = bodies(args.clients, args.images, "a lighthouse", 0)
            one_wall, one = run_clients(server.url, asked, together=False)
            batches_before = server.queue.batches_run
            all_wall, many = run_clients(server.url, bodies(args.clients, args.images, "a lighthouse", 100),
                                         together=True)
            print(f"one client at a time: {total / one_wall:.3f} images/s ({one_wall:.1f} s for {total}); "
                  f"first preview {percentiles([r['first_preview_s'] for r in one])}, "
                  f"last image {percentiles([r['last_image_s'] for r in one])}")
            print(f"{args.clients} clients at once:   {total / all_wall:.3f} images/s ({all_wall:.1f} s); "
                  f"first preview {percentiles([r['first_preview_s'] for r in many])}, "
                  f"last image {percentiles([r['last_image_s'] for r in many])}")
            print(f"speed-up {one_wall / all_wall:.2f}×; the clients at once ran in "
                  f"{server.queue.batches_run - batches_before} batch(es); "
                  f"images lost: {lost_images(out, one + many)}")
            if args.overload:
                server.queue.max_queue = args.clients
                wall, results = run_clients(server.url, bodies(3 * args.clients, args.images, "a crowd", 200),
                                            True)
                refused = sum(r["state"] == "refused" for r in results)
                accepted = [r for r in results if r["state"] != "refused"]
                print(f"overload: {3 * args.clients} clients at once, --max-queue {args.clients}: "
                      f"{refused / len(results):.0%} refused with 429; accepted {len(accepted)}, of which "
                      f"{sum(r['state'] == 'done' for r in accepted)} finished; images lost: "
                      f"{lost_images(out, accepted)} ({wall:.1f} s)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
