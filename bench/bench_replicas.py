"""Images per second of 1 against 2 Ray Serve generation replicas, at the pool level (no HTTP front).

One local Ray on 127.0.0.1 with two replicas, each pinned to its own CPU core (Ray counts CPUs but does not
pin them), on the tiny test models. Each replica first runs one batch (it compiles, or loads its compiled
programs from the cache); then the same work — `--batches` full batches of `max_batch` images — runs
on replica 0 alone, and then spread over both (one thread per replica takes the next batch as soon as its
replica is free, as the front will). Prints images/s both ways, the speed-up, seconds per batch, and
images lost (asked for but not delivered: must be 0).

    python bench/bench_replicas.py                     # the tiny models, 2 cores: about a minute
    python bench/bench_replicas.py --batches 16
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import threading
import time
from pathlib import Path

from nbkit.generation.pipeline import Batch
from nbkit.generation.request import GenerationRequest
from nbkit.generation.sampling import SamplingSettings
from nbkit.server.replicas.deployment import ReplicaModel

GOLDEN = Path(__file__).parent.parent / "tests" / "fixtures" / "golden"
SETTINGS = SamplingSettings()


def run_on(replicas, batches: list) -> tuple[float, int, list[float]]:
    """Runs every batch on the given replicas (one thread each, taking the next batch when free):
    seconds, images delivered, seconds per batch."""
    waiting: queue.Queue = queue.Queue()
    for batch in batches:
        waiting.put(batch)
    delivered, seconds, lock = [0], [], threading.Lock()

    def drive(replica):
        while True:
            try:
                tasks = waiting.get_nowait()
            except queue.Empty:
                return
            began = time.perf_counter()
            made = sum(len(e.images) for e in replica.run(tasks, SETTINGS, 64) if isinstance(e, Batch))
            with lock:
                delivered[0] += made
                seconds.append(time.perf_counter() - began)

    began = time.perf_counter()
    threads = [threading.Thread(target=drive, args=(replica,)) for replica in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began, delivered[0], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8, help="full batches in each measurement")
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument("--compilation-cache", default=None, help="a folder for compiled programs")
    args = parser.parse_args()

    from nbkit.server.replicas.ray_pool import PoolConfig, RayPool

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("This benchmark pins each of 2 replicas to its own core: it needs 2 cores.")
    model = ReplicaModel(str(GOLDEN / "dallebart-tiny"), str(GOLDEN / "vqgan-tiny"), max_batch=args.max_batch,
                         compilation_cache=args.compilation_cache)
    pool = RayPool(PoolConfig(2, model, {"num_cpus": 1}, num_cpus=2, cpu_cores=[[cores[0]], [cores[1]]]),
                   log=lambda line: None)
    try:
        replicas = pool.wait_ready(2, timeout=600)
        if len(replicas) < 2:
            raise SystemExit(f"Only {len(replicas)} replica(s) started: {pool.info()}")
        request = GenerationRequest(["an armchair shaped like an avocado"], args.max_batch * args.batches,
                                    seed=1, settings=SETTINGS)
        tasks = request.tasks()
        batches = [tasks[i:i + args.max_batch] for i in range(0, len(tasks), args.max_batch)]
        run_on(replicas, [batches[0], batches[0]])          # each replica compiles (or loads) its programs
        results = {}
        for count in (1, 2):
            seconds, made, per_batch = run_on(replicas[:count], batches)
            results[count] = made / seconds
            print(f"{count} replica(s): {made} images in {seconds:.1f} s = {made / seconds:.2f} images/s; "
                  f"median batch of {args.max_batch}: {statistics.median(per_batch):.2f} s; "
                  f"lost: {len(tasks) - made}")
        print(f"speed-up of 2 replicas over 1: {results[2] / results[1]:.2f}×  "
              f"(tiny models, {args.batches} batches of {args.max_batch}, one core per replica, "
              f"{os.cpu_count()} cores on this machine)")
    finally:
        pool.stop()


if __name__ == "__main__":
    main()
