"""The pure rules of a stream's batches: each image's random key, the rows a batch is padded to, and
which tasks share a batch (those of one kept prefix). Apart from `Pipeline` so that they can be read and
tested without a model; nothing here imports the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from nbkit.generation.request import ImageTask
from nbkit.generation.sampling import kept_prefix


@jax.jit
def _image_key(seed, prompt_index, image_index):
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), prompt_index), image_index)


def image_keys(seeds: int | np.ndarray, prompt_indexes: np.ndarray, image_indexes: np.ndarray) -> np.ndarray:
    """One raw PRNG key per image, from (seed, prompt index, image index) only (one compiled
    program for any number of images). `seeds`: one for all, or one per image."""
    seeds = np.broadcast_to(np.asarray(seeds, np.int64), np.shape(prompt_indexes))
    return np.stack([np.asarray(_image_key(np.uint32(seed), np.uint32(p), np.uint32(i)))
                     for seed, p, i in zip(seeds, prompt_indexes, image_indexes, strict=True)])


def padded_size(rows: int, data_parallel: int) -> int:
    """`rows` rounded up to a multiple of the data-parallel device count (a batch is split over them)."""
    return -(-max(rows, 1) // data_parallel) * data_parallel


def own_kept_prefix(task: ImageTask) -> int:
    """How many positions from the start `task` keeps: what the prefill runs for it."""
    return 0 if task.kept is None else kept_prefix(task.kept.mask[None])


def batches_of(tasks: Sequence[ImageTask], max_batch: int) -> list[tuple[int, ...]]:
    """The tasks' indexes, grouped into batches of at most `max_batch` that share their kept prefix.

    Why the prefix: a batch prefills the prefix its rows share and runs the rest step by step, and in
    bfloat16 or float16 the two paths give slightly different activations, hence other draws. A task
    batched only with tasks of its own prefix is prefilled exactly as it is alone, so its image does
    not depend on what it was packed with, in any dtype. (Prefilling each row to its own prefix would
    cost a masked cache write at every step of every batch; grouping costs nothing when prefixes agree,
    as they do within any one request.) Groups keep the order in which their first task came.
    """
    groups: dict[int, list[int]] = {}
    for index, task in enumerate(tasks):
        groups.setdefault(own_kept_prefix(task), []).append(index)
    return [tuple(group[first:first + max_batch]) for group in groups.values()
            for first in range(0, len(group), max_batch)]
