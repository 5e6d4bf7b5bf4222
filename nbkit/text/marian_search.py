"""Greedy and beam search for Marian, as the checkpoint's generation_config.json asks.

Both run a fixed number of steps over a fixed-size token buffer inside one jitted function, so one
compilation serves every prompt of a length bucket. The processors are the checkpoint's: the
`bad_words_ids` (single tokens: `<pad>`) never chosen, `</s>` forced at the last step, and, with
`renormalize_logits`, log-softmax again after them. Beam search keeps `num_beams` running and
`num_beams` finished hypotheses per prompt; a finished one scores its summed log-probabilities ÷
(its generated length ** length_penalty), and once no running beam can beat the worst finished one
(the length so far as the best hypothetical length, as with `early_stopping` false) the prompt
takes no more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp

from nbkit.models.marian import Marian

_NEG = -1e9


@dataclass(frozen=True)
class GenerationConfig:
    num_beams: int = 4
    length_penalty: float = 1.0
    bad_words_ids: tuple[int, ...] = ()
    eos_token_id: int = 0
    pad_token_id: int = 0
    decoder_start_token_id: int = 0
    forced_eos: bool = True
    renormalize_logits: bool = True
    max_length: int = 512

    @classmethod
    def from_folder(cls, folder: str | Path, pad_token_id: int) -> GenerationConfig:
        path = Path(folder) / "generation_config.json"
        values = json.loads(path.read_text(encoding="utf8")) if path.is_file() else {}
        bad = values.get("bad_words_ids") or [[pad_token_id]]
        single = tuple(words[0] for words in bad if isinstance(words, list) and len(words) == 1)
        eos = values.get("eos_token_id", 0)
        return cls(num_beams=int(values.get("num_beams", 4)),
                   length_penalty=float(values.get("length_penalty", 1.0)),
                   bad_words_ids=single, eos_token_id=int(eos[0] if isinstance(eos, list) else eos),
                   pad_token_id=int(values.get("pad_token_id", pad_token_id)),
                   decoder_start_token_id=int(values.get("decoder_start_token_id", pad_token_id)),
                   forced_eos=values.get("forced_eos_token_id") is not None,
                   renormalize_logits=bool(values.get("renormalize_logits", False)),
                   max_length=int(values.get("max_length", 512)))


def _process(log_probs, step, steps, gen: GenerationConfig):
    """The processors on (rows, vocab) scores at `step` (0-based; the last one forces `</s>`)."""
    if gen.bad_words_ids:
        log_probs = log_probs.at[:, jnp.array(gen.bad_words_ids)].set(-jnp.inf)
    if gen.forced_eos:
        only_eos = jnp.full_like(log_probs, -jnp.inf).at[:, gen.eos_token_id].set(0.0)
        log_probs = jnp.where(step == steps - 1, only_eos, log_probs)
    return log_probs


@partial(jax.jit, static_argnames=("model", "gen", "steps"))
def greedy_search(model: Marian, params, input_ids, attention_mask, gen: GenerationConfig, steps: int):
    """(batch, 1 + steps) ids: the start token, then the argmax each step; `<pad>` after `</s>`."""
    states = model.apply({"params": params}, input_ids, attention_mask, method=model.encode)
    batch = input_ids.shape[0]
    tokens = jnp.full((batch, steps + 1), gen.pad_token_id, jnp.int32)
    tokens = tokens.at[:, 0].set(gen.decoder_start_token_id)

    def step(t, carry):
        tokens, done = carry
        logits = model.apply({"params": params}, tokens, states, attention_mask, t, method=model.decode)
        scores = _process(logits, t, steps, gen)
        chosen = jnp.where(done, gen.pad_token_id, jnp.argmax(scores, axis=-1).astype(jnp.int32))
        return tokens.at[:, t + 1].set(chosen), done | (chosen == gen.eos_token_id)

    tokens, _ = jax.lax.fori_loop(0, steps, step, (tokens, jnp.zeros((batch,), bool)))
    return tokens


@partial(jax.jit, static_argnames=("model", "gen", "steps"))
def beam_search(model: Marian, params, input_ids, attention_mask, gen: GenerationConfig, steps: int):
    """((batch, 1 + steps) best ids, (batch,) their scores)."""
    beams = gen.num_beams
    batch, length = input_ids.shape
    states = model.apply({"params": params}, input_ids, attention_mask, method=model.encode)
    states = jnp.repeat(states, beams, axis=0)
    mask = jnp.repeat(attention_mask, beams, axis=0)
    start = jnp.full((batch, beams, steps + 1), gen.pad_token_id, jnp.int32).at[:, :, 0].set(
        gen.decoder_start_token_id)
    running_scores = jnp.tile(jnp.array([0.0] + [_NEG] * (beams - 1), jnp.float32), (batch, 1))
    finished = jnp.full((batch, beams, steps + 1), gen.pad_token_id, jnp.int32)
    finished_scores = jnp.full((batch, beams), _NEG, jnp.float32)
    is_finished = jnp.zeros((batch, beams), bool)
    still_open = jnp.ones((batch,), bool)
    keep = 2 * beams
    rows = jnp.arange(batch)[:, None]

    def step(t, carry):
        running, running_scores, finished, finished_scores, is_finished, still_open = carry
        flat = running.reshape(batch * beams, steps + 1)
        logits = model.apply({"params": params}, flat, states, mask, t, method=model.decode)
        log_probs = jax.nn.log_softmax(logits)
        log_probs = _process(log_probs, t, steps, gen)
        if gen.renormalize_logits:
            log_probs = jax.nn.log_softmax(log_probs)
        vocab = log_probs.shape[-1]
        totals = (log_probs.reshape(batch, beams, vocab) + running_scores[:, :, None]).reshape(batch, -1)
        top_scores, top_index = jax.lax.top_k(totals, keep)
        origin, token = top_index // vocab, (top_index % vocab).astype(jnp.int32)
        candidates = running[rows, origin].at[:, :, t + 1].set(token)
        ends = token == gen.eos_token_id
        # finished candidates: only among the best `beams`, only while the prompt is still open
        in_top = jnp.arange(keep)[None, :] < beams
        done_scores = top_scores / ((t + 1.0) ** gen.length_penalty)
        done_scores = jnp.where(ends & in_top & still_open[:, None], done_scores, _NEG)
        merged_scores = jnp.concatenate([finished_scores, done_scores], axis=1)
        merged = jnp.concatenate([finished, candidates], axis=1)
        merged_done = jnp.concatenate([is_finished, ends & in_top & still_open[:, None]], axis=1)
        best_scores, best = jax.lax.top_k(merged_scores, beams)
        finished, finished_scores = merged[rows, best], best_scores
        is_finished = merged_done[rows, best]
        # running beams: the best `beams` candidates that did not end
        open_scores = jnp.where(ends, _NEG, top_scores)
        next_scores, next_index = jax.lax.top_k(open_scores, beams)
        running = candidates[rows, next_index]
        # the prompt stays open while its best running beam could still beat its worst finished one
        best_possible = next_scores[:, 0] / ((t + 1.0) ** gen.length_penalty)
        worst = jnp.where(is_finished.all(axis=1), finished_scores.min(axis=1), _NEG)
        still_open = still_open & (best_possible > worst)
        return running, next_scores, finished, finished_scores, is_finished, still_open

    carry = (start, running_scores, finished, finished_scores, is_finished, still_open)
    _, _, finished, finished_scores, _, _ = jax.lax.fori_loop(0, steps, step, carry)
    return finished[:, 0], finished_scores[:, 0]
