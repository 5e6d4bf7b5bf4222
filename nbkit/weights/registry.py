"""The published models nbkit knows by name: where each lives, how big it is, what it needs.

Where each fact comes from (stored copies of the hub pages, read with the project's search tool;
nothing here was downloaded):
- mini: the hub commit e0888f6 "push wandb artif dalle-mini/dalle-mini/mini-1:v0" added the weights;
  the msgpack's LFS pointer (oid df70127f…, size 1,751,336,743) and enwiki's (26bc86b2…, 34,196,068,
  commit d37887a, which comes before e0888f6). Model card: Apache 2.0.
- mega: the hub commit 661203c "Push wandb artifact dalle-mini/dalle-mini/mega-1:v16"; the main
  branch's blob page names it as the last commit of flax_model.msgpack (oid 35a6c84b…, "10.4 GB").
  The text normalizer's word list exists only in the mini repository, as the reference code says.
- mega-fp16: the official inference notebook's `DALLE_MODEL` (W&B, no commit pin); "~4.9G on disk"
  from a min-dalle setup script. W&B gives no file sizes without an account, so they are checked by
  wandb's own digests.
- vqgan: the official notebook's `VQGAN_REPO` and `VQGAN_COMMIT_ID`; msgpack oid 5ef1a8f6…, "304 MB".
- clip-b32: the notebook's `CLIP_REPO` (unpinned there); revision 3d74acf from public code pinning it;
  msgpack oid 2a2994d8…, "605 MB". clip-l14: msgpack oid 156f677e…, size 1,710,486,359 (a pointer
  with the same oid); no commit pin was found, so it follows `main`.
Sizes given as "N MB" on a page are rounded: those files are checked against the size the hub
reports at download time, and every LFS file against its sha256.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

DALLEBART, VQGAN, CLIP = "dallebart", "vqgan", "clip"
MINI_REPO, MINI_REVISION = "dalle-mini/dalle-mini", "e0888f668d60b9009e1a00ef4b6c155ec7512610"
WORD_FREQUENCIES = "enwiki-words-frequency.txt"
GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class HubFile:
    """One file of a hub repository at a revision; size and sha256 when they are published."""
    repo: str
    revision: str
    filename: str
    size: int | None = None
    sha256: str | None = None


@dataclasses.dataclass(frozen=True)
class RegisteredModel:
    name: str
    kind: str                      # DALLEBART, VQGAN or CLIP
    title: str
    architecture: str              # key of the model module's published architectures
    repo: str | None = None        # hub repository ...
    revision: str = "main"
    artifact: str | None = None    # ... or W&B artifact `entity/project/name:version`
    files: tuple[HubFile, ...] = ()
    download_bytes: int = 0
    stored_dtype: str = "float32"
    license_url: str = ""

    @property
    def source(self) -> str:
        return self.artifact if self.artifact else f"{self.repo}@{self.revision}"


def _hub_files(repo: str, revision: str, names: tuple[str, ...], **known: tuple[int | None, str]):
    """Files of one repo at one revision; `known` maps a file's name (dots as underscores) to
    (size, sha256)."""
    files = []
    for name in names:
        size, sha256 = known.get(name.replace(".", "_").replace("-", "_"), (None, None))
        files.append(HubFile(repo, revision, name, size, sha256))
    return tuple(files)


_BART_TOKENIZER = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                   "special_tokens_map.json")
_CLIP_FILES = ("config.json", "flax_model.msgpack", "tokenizer.json", "vocab.json", "merges.txt",
               "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json")
_WORDS = HubFile(MINI_REPO, MINI_REVISION, WORD_FREQUENCIES, 34_196_068,
                 "26bc86b265dacb1f3974fc5aec5fd2523319a2a5207c6ff5c3c602a0f146574b")
# sha256 of each model's flax_model.msgpack (the LFS oids named above).
_MINI_SHA256 = "df70127fbf804aaec7b9eeb54bc123283405ea74e5047bede4986638a384951a"
_MEGA_SHA256 = "35a6c84b02cff45f7257283dbc7f2e4c403950ef146d9f0c9f5e6b9848b9602c"
_VQGAN_SHA256 = "5ef1a8f63877e450b2616169dcd1ab8f7b8a5eb95160549a1805e9e4511caa93"
_CLIP_B32_SHA256 = "2a2994d89bebd77abba5a554789dd9152a7e25467b79d88f6bd237d2dec5051c"
_CLIP_L14_SHA256 = "156f677ed4495acd1ec7197249c091b85c240267c82f2f7f2e4eae4177931fed"

MODELS: dict[str, RegisteredModel] = {m.name: m for m in (
    RegisteredModel(
        "mini", DALLEBART, "DALL·E mini", "mini", MINI_REPO, MINI_REVISION,
        files=_hub_files(MINI_REPO, MINI_REVISION, ("config.json", "flax_model.msgpack") + _BART_TOKENIZER,
                         flax_model_msgpack=(1_751_336_743, _MINI_SHA256))
        + (_WORDS,),
        download_bytes=1_789_000_000, license_url="https://huggingface.co/dalle-mini/dalle-mini"),
    RegisteredModel(
        "mega", DALLEBART, "DALL·E Mega", "mega", "dalle-mini/dalle-mega",
        "661203c9f0b19db31c8c857bad6c9c2315a95b42",
        files=_hub_files("dalle-mini/dalle-mega", "661203c9f0b19db31c8c857bad6c9c2315a95b42",
                         ("config.json", "flax_model.msgpack") + _BART_TOKENIZER,
                         flax_model_msgpack=(None, _MEGA_SHA256))
        + (_WORDS,),
        download_bytes=10_440_000_000, license_url="https://huggingface.co/dalle-mini/dalle-mega"),
    RegisteredModel(
        "mega-fp16", DALLEBART, "DALL·E Mega, half-precision weights (the official notebook's)", "mega",
        artifact="dalle-mini/dalle-mini/mega-1-fp16:latest", files=(_WORDS,), download_bytes=4_940_000_000,
        stored_dtype="float16", license_url="https://github.com/borisdayma/dalle-mini/blob/main/LICENSE"),
    RegisteredModel(
        "vqgan", VQGAN, "VQGAN f16 16384 (image decoder)", "vqgan", "dalle-mini/vqgan_imagenet_f16_16384",
        "e93a26e7707683d349bf5d5c41c5b0ef69b677a9",
        files=_hub_files("dalle-mini/vqgan_imagenet_f16_16384", "e93a26e7707683d349bf5d5c41c5b0ef69b677a9",
                         ("config.json", "flax_model.msgpack"),
                         flax_model_msgpack=(None, _VQGAN_SHA256)),
        download_bytes=304_000_000,
        license_url="https://github.com/CompVis/taming-transformers/blob/master/License.txt"),
    RegisteredModel(
        "clip-b32", CLIP, "CLIP ViT-B/32 (reranking)", "clip-b32", "openai/clip-vit-base-patch32",
        "3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268",
        files=_hub_files("openai/clip-vit-base-patch32", "3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268",
                         _CLIP_FILES, flax_model_msgpack=(None, _CLIP_B32_SHA256)),
        download_bytes=609_000_000, license_url="https://github.com/openai/CLIP/blob/main/LICENSE"),
    RegisteredModel(
        "clip-l14", CLIP, "CLIP ViT-L/14 (reranking, slower, better)", "clip-l14",
        "openai/clip-vit-large-patch14",
        files=_hub_files("openai/clip-vit-large-patch14", "main", _CLIP_FILES,
                         flax_model_msgpack=(1_710_486_359, _CLIP_L14_SHA256)),
        download_bytes=1_714_000_000, license_url="https://github.com/openai/CLIP/blob/main/LICENSE"),
)}

DALLEBART_MODELS = tuple(name for name, model in MODELS.items() if model.kind == DALLEBART)


@functools.cache
def parameter_count(kind: str, architecture: str) -> int:
    """Counted from the published architecture's parameter shapes (nothing is allocated)."""
    if kind == DALLEBART:
        from nbkit.models import dallebart as module
        model = module.DalleBart(module.PUBLISHED_ARCHITECTURES[architecture])
    elif kind == VQGAN:
        from nbkit.models import vqgan as module
        model = module.VQGANDecoder(module.PUBLISHED_ARCHITECTURE)
    else:
        from nbkit.models import clip as module
        model = module.CLIP(module.PUBLISHED_ARCHITECTURES[architecture])
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(module.param_shapes(model)))


def memory_needed(model: RegisteredModel, dtype: Any, images: int = 8) -> int:
    """Bytes to hold the weights in `dtype` and run a batch of `images`: the decoder's key/value
    cache for the batch (twice, for super-conditioning) or, for the pixel models, their activations."""
    itemsize = jnp.dtype(dtype).itemsize
    weights = parameter_count(model.kind, model.architecture) * itemsize
    if model.kind == DALLEBART:
        from nbkit.models.dallebart import PUBLISHED_ARCHITECTURES
        config = PUBLISHED_ARCHITECTURES[model.architecture]
        cache = 2 * config.decoder_layers * 2 * images * (config.image_length + 1) * config.d_model * itemsize
        return weights + cache + GIB // 4
    return weights + GIB // 2
