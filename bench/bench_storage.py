"""How far logits move when DalleBart's kernels are stored as bfloat16 or int8 (float32 arithmetic).

Teacher-forced logits of float32 weights against the same weights stored narrower
(`nbkit.weights.stored.store_weights`), on the golden fixture (its recorded inputs) and on DALL·E
mini's real size with random weights (one prompt, 256 random image tokens). Prints the largest and
mean absolute difference (÷ the logits' standard deviation), how often the best token is the same,
the overlap of the 50 best, and the mean KL divergence of the softmax from float32's.

    python bench/bench_storage.py
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from nbkit.models.dallebart import PUBLISHED_ARCHITECTURES, DalleBart
from nbkit.weights.loaders import load_dallebart, random_params
from nbkit.weights.stored import STORAGES, store_weights

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "golden" / "dallebart-tiny"


def agreement(reference: np.ndarray, other: np.ndarray) -> str:
    spread = reference.std()
    diff = np.abs(other - reference)
    best_same = np.mean(reference.argmax(-1) == other.argmax(-1))
    top = lambda a: np.argsort(-a, axis=-1)[..., :50]
    overlap = np.mean([len(set(a) & set(b)) / 50 for a, b in zip(top(reference).reshape(-1, 50),
                                                                   top(other).reshape(-1, 50), strict=True)])
    log_p, log_q = jax.nn.log_softmax(reference), jax.nn.log_softmax(other)
    kl = float(jnp.mean(jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)))
    return (f"max {diff.max() / spread:8.4f}  mean {diff.mean() / spread:8.5f}  best token same "
            f"{best_same:6.1%}  top-50 overlap {overlap:6.1%}  KL {kl:.2e}")


def compare(name: str, model: DalleBart, params: dict, ids, mask, image_tokens) -> None:
    logits = jax.jit(lambda p: model.apply({"params": p}, ids, mask, image_tokens))
    reference = np.asarray(logits(params))
    for storage in STORAGES[1:]:
        stored = np.asarray(logits(store_weights(params, storage)))
        print(f"{name:<28} {storage:<9} {agreement(reference, stored)}", flush=True)


def main() -> None:
    print("logit differences ÷ the float32 logits' standard deviation")
    expected = np.load(GOLDEN / "expected.npz", allow_pickle=True)
    model, params = load_dallebart(GOLDEN)
    compare("golden dallebart-tiny", model, params, expected["input_ids"], expected["attention_mask"],
            expected["decoder_input_ids"])
    config = PUBLISHED_ARCHITECTURES["mini"]
    model = DalleBart(config, jnp.float32)
    params = jax.jit(lambda: random_params(model))()
    ids = np.full((1, config.max_text_length), 1, np.int32)
    ids[0, :8] = np.arange(8) + 5
    image_tokens = np.asarray(jax.random.randint(jax.random.PRNGKey(1), (1, config.image_length), 0,
                                                 config.image_vocab_size))
    compare("mini, random real-size", model, params, ids, (ids != 1).astype(np.int32), image_tokens)


if __name__ == "__main__":
    main()
