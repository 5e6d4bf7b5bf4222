"""Time the reference dalle-mini 0.1.5 from prompt tokens to image tokens (DALL·E mini, random weights).

Run with the reference venv's python (bench/peers/setup_reference.sh makes it):

    bench/peers/.venv-reference/bin/python bench/peers/run_reference.py --repeats 2

The real DALL·E mini architecture (its hub config.json) with random float32 weights; one
prompt (a fixed 10-token stand-in, no tokenizer download) → 4 images of 256 tokens,
condition scale 10, top-k 50 (the config default the notebook used), temperature 1.
Times `DalleBart.generate` (encoder + 256-step sampling loop), not the VQGAN decode.
Prints one JSON line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import sys
import types

import numpy as np
from _peer_common import (
    BOS,
    CODEBOOK_SIZE,
    CONDITION_SCALE,
    EOS,
    IMAGE_TOKENS,
    IMAGES,
    TOP_K,
    check_tokens,
    forbid_network,
    log,
    parse_args,
    prompt_tokens,
    report,
    text_rows,
    time_runs,
    versions,
)

try:
    import jax
    import jax.experimental
    import jax.numpy as jnp
    import jax.sharding

    # Shims, not patches: dalle_mini imports jax.experimental.PartitionSpec (moved to
    # jax.sharding by jax 0.4.13), and imports wandb at the top although it only uses it to
    # fetch W&B artifacts, which nothing here does (wandb is not installed).
    jax.experimental.PartitionSpec = jax.sharding.PartitionSpec
    sys.modules.setdefault("wandb", types.ModuleType("wandb"))
    from dalle_mini.model import DalleBart, DalleBartConfig
except ImportError as error:
    sys.exit(f"error: {error}; run this with the venv from bench/peers/setup_reference.sh")

START_TOKEN = 16384  # decoder_start_token_id; generate returns it as column 0

# The hub config.json of dalle-mini/dalle-mini (DALL·E mini), less what only training uses.
MINI = dict(
    normalize_text=True, encoder_vocab_size=50264, image_vocab_size=16384, image_length=256,
    max_text_length=64, d_model=1024, encoder_layers=12, decoder_layers=12,
    encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=2730, decoder_ffn_dim=2730,
    activation_function="gelu", dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
    ln_positions="normformer", ln_type="layernorm", use_glu=True, use_bias=False,
    use_final_ln_encoder=True, use_final_ln_decoder=True, use_absolute_position_embeddings=True,
    scale_embedding=False, tie_word_embeddings=False, force_ln_scale=False,
    bos_token_id=16385, eos_token_id=16385, pad_token_id=16385, decoder_start_token_id=START_TOKEN,
    min_length=257, max_length=257, do_sample=True,
    gradient_checkpointing=False, use_scan=True,  # the published mini-1 stores layers stacked
)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    forbid_network()
    log(f"jax {jax.__version__} on {jax.devices()[0].platform}; building DALL·E mini with random weights")
    config = DalleBartConfig(**MINI)
    if config.top_k != TOP_K:
        sys.exit(f"error: expected the config's default top_k {TOP_K}, got {config.top_k}")
    model = DalleBart(config, dtype=jnp.float32, _do_init=False)
    params = jax.jit(model.init_weights, static_argnums=1)(jax.random.PRNGKey(0), (1, 1))
    params = jax.block_until_ready(params)

    # The processor's rows for one prompt repeated 4 times, and for the empty prompt.
    input_ids, attention_mask = text_rows(prompt_tokens(), IMAGES)
    input_ids_uncond, attention_mask_uncond = text_rows([BOS, EOS], IMAGES)

    # The official notebook wrapped generate in jax.pmap (condition scale, top_k, top_p and
    # temperature static) and made one image per call on its one CPU device. Here generate
    # runs under jax.jit with the same settings fixed at trace time and a batch of 4, the
    # batching nbkit uses, so that both do the same work per call; top_k=None takes the
    # config's default (50), as the notebook's None did.
    @jax.jit
    def generate(params: dict, input_ids: jax.Array, attention_mask: jax.Array, input_ids_uncond: jax.Array,
                 attention_mask_uncond: jax.Array, key: jax.Array) -> jax.Array:
        return model.generate(input_ids=input_ids, attention_mask=attention_mask, prng_key=key, params=params,
                              top_k=None, top_p=None, temperature=None, condition_scale=CONDITION_SCALE,
                              input_ids_uncond=input_ids_uncond,
                              attention_mask_uncond=attention_mask_uncond).sequences

    def run(seed: int) -> np.ndarray:
        # np.asarray waits for the result
        sequences = np.asarray(generate(params, input_ids, attention_mask, input_ids_uncond,
                                        attention_mask_uncond, jax.random.PRNGKey(seed)))
        if sequences.shape != (IMAGES, IMAGE_TOKENS + 1) or not (sequences[:, 0] == START_TOKEN).all():
            sys.exit(f"error: expected ({IMAGES}, {IMAGE_TOKENS + 1}) sequences starting with {START_TOKEN}, "
                     f"got {sequences.shape}")
        return sequences[:, 1:]

    def check(tokens: np.ndarray) -> np.ndarray:
        # The reference's lm_head also scores the start token (16384) and it does not mask
        # it, so with random weights it can be drawn: allowed, but counted.
        check_tokens(tokens, CODEBOOK_SIZE + 1)
        if (drawn := int((tokens == CODEBOOK_SIZE).sum())):
            log(f"note: {drawn} of the tokens are the start token {CODEBOOK_SIZE} (random weights)")
        return tokens

    first_s, runs_s = time_runs(run, args.repeats, check)
    report("reference", first_s, runs_s,
           versions("dalle-mini", "jax", "jaxlib", "flax", "transformers", "numpy"))


if __name__ == "__main__":
    main()
