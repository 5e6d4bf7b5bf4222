"""One generation replica on Ray Serve: a process that holds one Pipeline on its accelerator.

It loads the weights once from the cache and keeps its compiled programs (and, with a compilation cache,
shares them with the replicas started after it); Ray Serve gives it one request at a time
(`max_ongoing_requests=1`, set by the pool) and restarts it when its process dies. `run` is a generator,
read by the front as a Ray Serve streaming response. The class is plain Python; Ray Serve is imported only
by `replica_deployment` and `app`, which a pool (or a Serve config such as KubeRay's RayService) calls.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from nbkit.generation.request import ImageTask
from nbkit.generation.sampling import SamplingSettings


@dataclasses.dataclass(frozen=True)
class ReplicaModel:
    """What each replica loads: the arguments of `Pipeline.from_pretrained`, as the front was given them."""

    model: str = "mini"
    vqgan: str = "vqgan"
    dtype: str | None = None
    max_batch: int | None = None
    cache: str | None = None
    compilation_cache: str | None = None
    weight_storage: str = "float32"


class GenerationReplica:
    """The class Ray Serve instantiates in each replica process."""

    def __init__(self, model: ReplicaModel, cpu_cores: Sequence[int] | None = None):
        if cpu_cores:
            # Ray counts CPUs but does not pin them; the benchmark pins each replica to its own core(s).
            os.sched_setaffinity(0, set(cpu_cores))
        from nbkit.generation.pipeline import Pipeline
        from nbkit.server.replicas.base import ModelFacts
        from nbkit.server.replicas.local import device_words

        self.pipe = Pipeline.from_pretrained(model.model, model.vqgan, model.dtype, max_batch=model.max_batch,
                                             cache=model.cache, progress=False,
                                             compilation_cache=model.compilation_cache,
                                             weight_storage=model.weight_storage)
        self.description = {"pid": os.getpid(), "host": socket.gethostname(),
                            "device": device_words(self.pipe), "model": self.pipe.name,
                            "max_batch": self.pipe.max_batch,
                            "facts": dataclasses.asdict(ModelFacts.of_pipeline(self.pipe))}

    def describe(self) -> dict[str, Any]:
        """Its process id, host, devices and model facts: asked once when it becomes ready."""
        return self.description

    def run(self, tasks: Sequence[ImageTask], settings: SamplingSettings, progress_every: int | None = None,
            previews: bool = True) -> Iterator[Any]:
        from nbkit.server.replicas.previews import paced
        from nbkit.server.replicas.wire import to_wire

        yield from to_wire(paced(self.pipe.stream_tasks(tasks, settings, progress_every)), previews)


def replica_deployment(resources: Mapping | None = None):
    """The Serve deployment of one replica: one process, one request at a time (the front packs batches
    and sends the next when this one is free), `resources` its Ray actor options ({"num_gpus": 1}...).
    A constructor that fails (the model cannot load) is tried twice, then the replica is reported failed."""
    from ray import serve

    options = dict(resources or {"num_cpus": 1})
    return serve.deployment(GenerationReplica, name="generator", num_replicas=1, max_ongoing_requests=1,
                            max_constructor_retry_count=1, ray_actor_options=options)


def app(args: Mapping[str, Any]):
    """A replica as a Serve application, for Serve config files (`import_path:
    nbkit.server.replicas.deployment:app`, as in deploy/rayservice.yaml): `args` holds ReplicaModel's
    fields and, optionally, "resources" (Ray actor options)."""
    names = {field.name for field in dataclasses.fields(ReplicaModel)}
    unknown = set(args) - names - {"resources"}
    if unknown:
        raise ValueError(f"Unknown replica arguments {sorted(unknown)}: use {sorted(names | {'resources'})}.")
    model = ReplicaModel(**{name: value for name, value in args.items() if name in names})
    return replica_deployment(args.get("resources")).bind(model)
