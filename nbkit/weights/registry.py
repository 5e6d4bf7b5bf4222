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
- The Real-ESRGAN upscalers (esrgan-*): GitHub release assets of xinntao/Real-ESRGAN (BSD-3-Clause),
  at the URLs its README and inference script name. The release pages publish no hashes; each sha256
  below is the one that independent public download scripts pin for the same URL (read with the search
  tool): RealESRGAN_x4plus 4fa0d389… (several projects agree; one also gives its size, 67,040,989
  bytes) and RealESRGAN_x4plus_anime_6B f872d837… (a Stable Diffusion web UI's Docker entrypoint,
  which checks both with sha256sum), RealESRGAN_x2plus 49fafd45… (a Dockerfile that checks it with
  sha256sum), realesr-general-x4v3 8dc7edb9… (a Modal photo-restoration app that asserts it at
  build time). Only x4plus's size was published; the others are checked by hash alone, and their
  download sizes below are estimated from the parameter counts (float32, ±1%).
- The translators (translate-*): the Helsinki-NLP opus-mt-*-en hub repositories (CC-BY-4.0), their
  file names as the golden README lists them. No commit sha could be read here, so they follow `main`
  (pinned explicitly), and their files are checked by the size and hash the hub reports at download
  time. Their download size is estimated from the base architecture (6+6 layers, d_model 512) with a
  65,001-entry vocabulary (opus-mt-en-zh's); the real vocabularies differ per pair.
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

DALLEBART, VQGAN, CLIP, UPSCALER, TRANSLATOR = "dallebart", "vqgan", "clip", "upscaler", "translator"
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
class ReleaseFile:
    """One file downloaded from a plain URL (a GitHub release asset), pinned by its sha256."""
    url: str
    filename: str
    sha256: str
    size: int | None = None


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
    release: ReleaseFile | None = None   # ... or one file at a URL (the upscalers)
    license: str = ""

    @property
    def source(self) -> str:
        if self.release:
            return self.release.url
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
# The word list text normalization reads (only the mini repository has it; Mega and other DalleBarts get it).
WORDS_FILE = HubFile(MINI_REPO, MINI_REVISION, WORD_FREQUENCIES, 34_196_068,
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
        + (WORDS_FILE,),
        download_bytes=1_789_000_000, license_url="https://huggingface.co/dalle-mini/dalle-mini"),
    RegisteredModel(
        "mega", DALLEBART, "DALL·E Mega", "mega", "dalle-mini/dalle-mega",
        "661203c9f0b19db31c8c857bad6c9c2315a95b42",
        files=_hub_files("dalle-mini/dalle-mega", "661203c9f0b19db31c8c857bad6c9c2315a95b42",
                         ("config.json", "flax_model.msgpack") + _BART_TOKENIZER,
                         flax_model_msgpack=(None, _MEGA_SHA256))
        + (WORDS_FILE,),
        download_bytes=10_440_000_000, license_url="https://huggingface.co/dalle-mini/dalle-mega"),
    RegisteredModel(
        "mega-fp16", DALLEBART, "DALL·E Mega, half-precision weights (the official notebook's)", "mega",
        artifact="dalle-mini/dalle-mini/mega-1-fp16:latest", files=(WORDS_FILE,),
        download_bytes=4_940_000_000,
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

_ESRGAN_RELEASES = "https://github.com/xinntao/Real-ESRGAN/releases/download"
_ESRGAN_LICENSE = "https://github.com/xinntao/Real-ESRGAN/blob/master/LICENSE"


def _esrgan(name: str, title: str, architecture: str, tag: str, filename: str, sha256: str,
            download_bytes: int, size: int | None = None) -> RegisteredModel:
    return RegisteredModel(name, UPSCALER, title, architecture, download_bytes=download_bytes,
                           license_url=_ESRGAN_LICENSE, license="BSD-3-Clause",
                           release=ReleaseFile(f"{_ESRGAN_RELEASES}/{tag}/{filename}", filename, sha256,
                                               size))


MODELS.update({m.name: m for m in (
    _esrgan("esrgan-x4", "Real-ESRGAN x4plus (photos and general pictures, the default upscaler)", "x4plus",
            "v0.1.0", "RealESRGAN_x4plus.pth",
            "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1", 67_040_989, 67_040_989),
    _esrgan("esrgan-anime", "Real-ESRGAN x4plus_anime_6B (illustrations, cartoons)", "x4plus-anime-6b",
            "v0.2.2.4", "RealESRGAN_x4plus_anime_6B.pth",
            "f872d837d3c90ed2e05227bed711af5671a6fd1c9f7d7e91c911a61f155e99da", 17_940_000),
    _esrgan("esrgan-x2", "Real-ESRGAN x2plus (256 → 512 px)", "x2plus", "v0.2.1", "RealESRGAN_x2plus.pth",
            "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb", 67_060_000),
    _esrgan("esrgan-fast", "Real-ESRGAN general-x4v3 (small and fast, slightly softer)", "general-x4v3",
            "v0.2.5.0", "realesr-general-x4v3.pth",
            "8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292", 4_890_000),
)})

_OPUS_MT_FILES = ("config.json", "pytorch_model.bin", "generation_config.json", "source.spm", "target.spm",
                  "vocab.json", "tokenizer_config.json")
_OPUS_MT_BYTES = 310_000_000   # ~77.5 M float32 parameters at a 65,001-entry vocabulary (see above)


def _opus_mt(name: str, language: str, pair: str) -> RegisteredModel:
    repo = f"Helsinki-NLP/opus-mt-{pair}-en"
    title = f"opus-mt {language} → English (prompt translation)"
    return RegisteredModel(name, TRANSLATOR, title, "opus-mt-base",
                           repo, "main", files=_hub_files(repo, "main", _OPUS_MT_FILES),
                           download_bytes=_OPUS_MT_BYTES, license="CC-BY-4.0",
                           license_url=f"https://huggingface.co/{repo}")


MODELS.update({m.name: m for m in (
    _opus_mt("translate-zh", "Chinese", "zh"),
    _opus_mt("translate-ja", "Japanese", "ja"),
    _opus_mt("translate-ko", "Korean", "ko"),
    _opus_mt("translate-ru", "Russian", "ru"),
    _opus_mt("translate-ar", "Arabic", "ar"),
    _opus_mt("translate-mul", "many languages", "mul"),
)})

DALLEBART_MODELS = tuple(name for name, model in MODELS.items() if model.kind == DALLEBART)
UPSCALER_MODELS = tuple(name for name, model in MODELS.items() if model.kind == UPSCALER)
DEFAULT_UPSCALER = "esrgan-x4"
TRANSLATOR_MODELS = tuple(name for name, model in MODELS.items() if model.kind == TRANSLATOR)


def translators_summary() -> str:
    """The registered translators, for `nbkit info`."""
    lines = ["translators:  (--translate auto|off|NAME; auto picks one from the prompt's script)"]
    for name in TRANSLATOR_MODELS:
        model = MODELS[name]
        lines.append(f"  {name:<13} ~{model.download_bytes / 1e6:3.0f} MB  {model.source}  {model.title}")
    return "\n".join(lines)


def upscalers_summary() -> str:
    """The registered upscalers, for `nbkit info`: name, what it is for, license and download size."""
    lines = ["upscalers:    (python -m nbkit upscale IMAGE --model NAME; default " + DEFAULT_UPSCALER + ")"]
    for name in UPSCALER_MODELS:
        model = MODELS[name]
        params = parameter_count(UPSCALER, model.architecture)
        lines.append(f"  {name:<13} {model.download_bytes / 1e6:5.1f} MB  {params / 1e6:5.2f} M params  "
                     f"{model.license}  {model.title}")
    return "\n".join(lines)


# Parameter counts of the published architectures, as `counted_parameters` finds them
# (tests/weights/test_registry.py counts them again): `nbkit info` and the model picker read these, so
# that they build no model.
PARAMETER_COUNTS = {
    (DALLEBART, "mini"): 437_833_712, (DALLEBART, "mega"): 2_587_521_024, (VQGAN, "vqgan"): 46_709_891,
    (CLIP, "clip-b32"): 151_277_313, (CLIP, "clip-l14"): 427_616_513,
    (UPSCALER, "x4plus"): 16_697_987, (UPSCALER, "x4plus-anime-6b"): 4_467_779,
    (UPSCALER, "x2plus"): 16_703_171, (UPSCALER, "general-x4v3"): 1_213_296,
    (TRANSLATOR, "opus-mt-base"): 77_484_009,
}


def parameter_count(kind: str, architecture: str) -> int:
    """How many parameters a published architecture has: from the table, else counted."""
    known = PARAMETER_COUNTS.get((kind, architecture))
    return known if known is not None else counted_parameters(kind, architecture)


@functools.cache
def counted_parameters(kind: str, architecture: str) -> int:
    """Counted from the published architecture's parameter shapes (nothing is allocated)."""
    if kind == DALLEBART:
        from nbkit.models import dallebart as module
        model = module.DalleBart(module.PUBLISHED_ARCHITECTURES[architecture])
    elif kind == VQGAN:
        from nbkit.models import vqgan as module
        model = module.VQGANDecoder(module.PUBLISHED_ARCHITECTURE)
    elif kind == TRANSLATOR:
        from nbkit.models import marian as module
        model = module.Marian(module.PUBLISHED_ARCHITECTURES[architecture])
    elif kind == UPSCALER:
        from nbkit.models import esrgan as module
        model = module.build(module.PUBLISHED_ARCHITECTURES[architecture])
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
