"""Where packed batches run: in this process (the default), or on Ray Serve replicas.

The front (queue, packing, saving) hands a batch of `ImageTask`s to a `Replica` and reads back the
pipeline's own events (`Progress`, `Batch`, `Done`). `base` says what a replica and a pool are; `local` is
the one in-process replica, imported with no Ray; `ray_pool` (and the deployment it runs, `deployment`)
is imported only when replicas are asked for, as Ray is an optional install (`nbkit[cluster]`).
"""

from nbkit.server.replicas.base import (
    DEAD,
    FAILED,
    READY,
    STARTING,
    STATES,
    ModelFacts,
    NoReplicaReady,
    Replica,
    ReplicaDied,
    ReplicaPool,
)
from nbkit.server.replicas.local import InProcessReplica, LocalPool

__all__ = ["DEAD", "FAILED", "READY", "STARTING", "STATES",
           "InProcessReplica", "LocalPool", "ModelFacts", "NoReplicaReady", "Replica", "ReplicaDied",
           "ReplicaPool"]
