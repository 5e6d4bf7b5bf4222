"""Generation replicas on Ray Serve: a local Ray on 127.0.0.1, or a cluster the operator runs.

Each replica is its own Serve application (one deployment, one replica, one request at a time), so the
front addresses each one by name: it keeps one batch in flight on every ready replica, knows which
replica made each image, and, when a replica's process dies, which tasks it had not delivered (Serve
restarts the replica; the pool marks it ready again once it answers). Serve's own router would spread
requests over N replicas of one deployment, but it hides which replica ran a request and queues requests
behind a busy one, where the front must pack the next batch only when a replica is free.

Ray is imported here, when a pool starts, and only when replicas are asked for: it is an optional install
(`pip install 'nbkit[cluster]'`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence

from nbkit.generation.events import Event
from nbkit.generation.request import ImageTask
from nbkit.generation.sampling import SamplingSettings
from nbkit.server.replicas.base import DEAD, FAILED, READY, ModelFacts, Replica, ReplicaDied, ReplicaPool
from nbkit.server.replicas.deployment import ReplicaModel, replica_deployment
from nbkit.server.replicas.wire import from_wire

# Ray reads this once, when imported: "0" makes a local Ray advertise 127.0.0.1 and open every port on it
# (GCS, raylet, object manager, workers) instead of on all interfaces. Only for a local Ray: a cluster's
# nodes need each other's real addresses, so it is set in `_import_ray(local=True)` alone.
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
APP_PREFIX = "nbkit-replica"
LOOPBACK = "127.0.0.1"
MONITOR_S = 0.5                  # how often the pool reads Serve's status
DESCRIBE_TIMEOUT_S = 5.0         # a replica that Serve calls running answers `describe` within this


def _import_ray(local: bool):
    """Ray and Ray Serve, imported on first use (after LOOPBACK_ONLY is set, for a local Ray)."""
    if local and "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ONLY, "0")
    try:
        import ray
        from ray import serve
        from ray.serve.api import RunTarget
    except ImportError as error:
        raise ImportError("Replicas run on Ray Serve, which is not installed: "
                          "pip install 'nbkit[cluster]'.") from error
    return ray, serve, RunTarget


def _process_gone() -> tuple[type[BaseException], ...]:
    """The errors that mean a replica's process is gone: its actor died, its worker crashed, its node
    went away (user errors from the pipeline come as RayTaskError, which keeps their own type)."""
    import ray.exceptions

    names = ("RayActorError", "WorkerCrashedError", "NodeDiedError", "OwnerDiedError")
    return tuple(getattr(ray.exceptions, name) for name in names if hasattr(ray.exceptions, name))


def parse_replica_resources(text: str) -> dict:
    """`--replica-resources` → Ray actor options: "num_cpus=1", "num_gpus=1", "num_cpus=8,TPU=4" (any
    other name is a custom resource, e.g. a TPU host's "TPU")."""
    options: dict = {}
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        name, equals, value = part.partition("=")
        try:
            amount = float(value)
        except ValueError:
            amount = -1.0
        if not equals or not name.strip() or amount < 0:
            raise ValueError(f"--replica-resources takes name=amount pairs, e.g. num_cpus=1 or num_gpus=1 or "
                             f"num_cpus=8,TPU=4 (got {part!r}).")
        name = name.strip()
        amount = int(amount) if amount.is_integer() else amount
        if name in ("num_cpus", "num_gpus", "memory"):
            options[name] = amount
        else:
            options.setdefault("resources", {})[name] = amount
    return options


@dataclasses.dataclass(frozen=True)
class PoolConfig:
    """How many replicas, where, and with what.

    `ray_address`: None starts a local Ray bound to 127.0.0.1 (stopped with the pool); else join that
    cluster ("auto", "HOST:6379", "ray://HOST:10001"), where only the pool's applications are removed at
    the end. `resources`: each replica's Ray actor options (`parse_replica_resources`). `num_cpus`,
    `num_gpus`: what a local Ray offers (default: what the machine has). `cpu_cores`: pin replica i to
    these cores (benchmarks; Ray itself does not pin). `deploy` False: use the applications named
    `<app_prefix>-<n>` already running on the cluster (deployed by KubeRay or `serve deploy`), and leave
    them running at the end; `replicas` is then ignored.
    """

    replicas: int
    model: ReplicaModel
    resources: Mapping = dataclasses.field(default_factory=lambda: {"num_cpus": 1})
    ray_address: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    cpu_cores: Sequence[Sequence[int]] | None = None
    app_prefix: str = APP_PREFIX
    deploy: bool = True

    def __post_init__(self):
        if not (isinstance(self.replicas, int) and self.replicas >= 1):
            raise ValueError(f"--replicas must be a whole number ≥ 1 (got {self.replicas!r}).")


def _app_order(name: str) -> tuple:
    number = name.rpartition("-")[2]
    return (0, int(number), name) if number.isdigit() else (1, 0, name)


def _last_line(message: str) -> str:
    """The line of a traceback that says what went wrong (its last one)."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "failed to start"


class RayReplica(Replica):
    """One Serve application with one replica of `GenerationReplica`."""

    remote = True

    def __init__(self, name: str, app: str, handle):
        super().__init__(name)
        self.app, self.handle = app, handle
        self._lost_pid: int | None = None       # a process that died; its successor has another pid

    def _events(self, tasks: list[ImageTask], settings: SamplingSettings, progress_every: int | None,
                delivered: list[bool]) -> Iterator[Event]:
        stream = self.handle.options(stream=True).run.remote(tasks, settings, progress_every)
        try:
            for item in stream:
                yield from_wire(item)
        except _process_gone() as error:
            cause = _last_line(str(error).split("\n")[0]) or type(error).__name__
            self.lost(f"{type(error).__name__}: {cause}")
            unfinished = [index for index, done in enumerate(delivered) if not done]
            if unfinished:
                raise ReplicaDied(self.name, unfinished, [tasks[i] for i in unfinished], cause) from error
        except GeneratorExit:
            stream.cancel()
            raise

    def lost(self, error: str) -> None:
        """Its process died: Serve starts another, which the pool's monitor finds ready."""
        if self.state != DEAD:
            self.counts.restarts += 1
            self._lost_pid = self.pid
        self.state, self.counts.last_error = DEAD, error

    def check(self, serve_state: str | None, message: str, log: Callable[[str], None]) -> None:
        """Follows Serve's view of the application (called by the pool's monitor thread)."""
        if self.state == FAILED or self.busy:
            return
        if serve_state == "DEPLOY_FAILED":
            self.state, self.counts.last_error = FAILED, _last_line(message)
            log(f"replica {self.name} failed to start: {self.counts.last_error}")
            return
        if self.state == READY:
            if serve_state not in ("RUNNING", None):
                self.lost(f"Ray Serve reports it {serve_state}")
                log(f"replica {self.name} is down ({serve_state}); Ray Serve is restarting it")
            return
        if serve_state != "RUNNING":
            return
        response = self.handle.describe.remote()
        try:
            described = response.result(timeout_s=DESCRIBE_TIMEOUT_S)
        except TimeoutError:
            response.cancel()
            return
        except _process_gone():
            return
        if described["pid"] == self._lost_pid:
            return
        self.pid, self.device = described["pid"], f"{described['device']} on {described['host']}"
        self.model = ModelFacts(**described["facts"])
        was = self.state
        self.state = READY
        log(f"replica {self.name} ready ({self.device}, pid {self.pid})"
            + (" after a restart" if was == DEAD else ""))


class RayPool(ReplicaPool):
    """Starts (or joins) Ray, deploys `config.replicas` replicas, and follows their states.

    Replicas start in the background: `wait_ready` blocks until some are ready. A replica that cannot
    start is marked failed (its error on /api/info), and the others serve."""

    def __init__(self, config: PoolConfig, log: Callable[[str], None] | None = None):
        self.config, self.log = config, log or _to_stderr
        self._started_ray = False
        self._stopping = threading.Event()
        self._start_ray()
        _ray, serve, RunTarget = _import_ray(config.ray_address is None)
        self.replicas: list[Replica] = []
        if config.deploy:
            deployment = replica_deployment(config.resources)
            targets = []
            for index in range(config.replicas):
                cores = config.cpu_cores[index] if config.cpu_cores else None
                app = f"{config.app_prefix}-{index}"
                targets.append(RunTarget(deployment.bind(config.model, cores), name=app, route_prefix=None))
            handles = serve.run_many(targets, wait_for_applications_running=False)
            apps = [target.name for target in targets]
        else:
            # Replicas someone else deploys (KubeRay's RayService, `serve deploy`): the front uses them.
            apps = sorted((name for name in serve.status().applications
                           if name.startswith(config.app_prefix + "-")), key=_app_order)
            if not apps:
                raise RuntimeError(f"No Ray Serve application named {config.app_prefix}-<n> runs on "
                                   f"{config.ray_address}: deploy the replicas first (deploy/README.md).")
            handles = [serve.get_app_handle(name) for name in apps]
        for name, handle in zip(apps, handles, strict=True):
            self.replicas.append(RayReplica(f"replica-{name.rpartition('-')[2]}", name, handle))
        self.log(f"{'starting' if config.deploy else 'using'} {len(apps)} replica(s) on Ray Serve"
                 + (f" ({dict(config.resources)} each)" if config.deploy else ""))
        self._monitor = threading.Thread(target=self._follow, name="nbkit-replicas", daemon=True)
        self._monitor.start()

    def _start_ray(self) -> None:
        ray, serve, _ = _import_ray(self.config.ray_address is None)
        if ray.is_initialized():
            pass
        elif self.config.ray_address is None:
            # Every port Ray opens listens on the loopback address only; no dashboard.
            ray.init(address="local", num_cpus=self.config.num_cpus, num_gpus=self.config.num_gpus,
                     include_dashboard=False, _node_ip_address=LOOPBACK, log_to_driver=False,
                     namespace="nbkit")
            self._started_ray = True
            address = ray.get_runtime_context().gcs_address
            if not address.startswith(LOOPBACK + ":"):
                ray.shutdown()
                raise RuntimeError(f"The local Ray would listen on {address.rpartition(':')[0]}, not only on "
                                   f"{LOOPBACK}: Ray was imported before nbkit could keep it local. Start "
                                   f"the server with {LOOPBACK_ONLY}=0 in its environment.")
        else:
            ray.init(address=self.config.ray_address, log_to_driver=False, namespace="nbkit")
        serve.start(proxy_location="Disabled")     # the front answers HTTP; Serve's proxy is not needed

    def _follow(self) -> None:
        _ray, serve, _ = _import_ray(False)
        while not self._stopping.wait(MONITOR_S):
            try:
                applications = serve.status().applications
            except Exception as error:            # the controller restarting: try again shortly
                self.log(f"replicas: could not read Ray Serve's status ({error})")
                continue
            for replica in self.replicas:
                status = applications.get(replica.app)
                message = ""
                if status is not None:
                    parts = [status.message, *(d.message for d in status.deployments.values())]
                    message = "\n".join(parts)
                try:
                    replica.check(None if status is None else str(status.status.value), message, self.log)
                except Exception as error:
                    self.log(f"replica {replica.name}: status check failed ({error})")

    def stop(self) -> None:
        """Removes the replicas' applications; stops Ray if the pool started it."""
        ray, serve, _ = _import_ray(False)
        self._stopping.set()
        self._monitor.join(10)
        for replica in self.replicas if self.config.deploy else []:
            try:
                serve.delete(replica.app)
            except Exception as error:
                self.log(f"replica {replica.name}: could not remove it ({error})")
        if self._started_ray:
            serve.shutdown()
            ray.shutdown()


def _to_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
