"""A saved PNG made again from its metadata alone, and compared with the file: one entry, `reproduce`, and
one result, `Reproduction`, for both kinds of PNG. A drawn PNG (its record names the model, seed, settings,
tokens and the batch shape it was drawn in) is drawn again by a `Pipeline`; an upscaled one (its metadata
names its source and upscaler) is upscaled again from the source beside it. The README's contract: the
same tokens, and pixels within one level (sums may run in another order on other devices).
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from PIL import Image

from nbkit.generation.kept import KeptTokens
from nbkit.generation.request import ImageTask, check_seed
from nbkit.generation.sampling import SamplingSettings
from nbkit.imagefile import read_image, read_rgb
from nbkit.limits import MAX_IMAGE_PIXELS
from nbkit.output.records import UPSCALED_FROM, ImageRecord
from nbkit.output.upscaled import UPSCALER_KEY, read_picture
from nbkit.png import read_png_metadata
from nbkit.text.tokenizer import check_prompts

if TYPE_CHECKING:
    from nbkit.generation.events import GeneratedImage
    from nbkit.generation.pipeline import Pipeline
    from nbkit.generation.upscale import Upscaler

DRAWN, UPSCALED = "drawn", "upscaled"


def prng_partitionable() -> bool:
    """The PRNG setting images are drawn with now (recorded with each; jax changed its default in 0.5)."""
    return bool(jax.config.jax_threefry_partitionable)


@contextlib.contextmanager
def _prng(partitionable: bool | None):
    """The PRNG implementation an image was made with, for the time it is made again."""
    before = prng_partitionable()
    if partitionable is not None:
        jax.config.update("jax_threefry_partitionable", partitionable)
    try:
        yield
    finally:
        jax.config.update("jax_threefry_partitionable", before)


@dataclasses.dataclass(frozen=True)
class Reproduction:
    """A PNG made again, and how it compares with the saved one. `kind`: "drawn" (from its tokens' record:
    `image` is the GeneratedImage made again) or "upscaled" (from the source beside it: no tokens)."""

    png: Path
    kind: str
    pixels: np.ndarray              # made again
    pixels_differing: int           # pixels (any channel) that differ from the saved PNG's by > 0 levels
    most_levels: int                # the largest difference of any channel, in levels of 255
    image: GeneratedImage | None = None
    recorded_tokens: tuple[int, ...] = ()
    tokens_differing: int = 0       # of the recorded tokens
    record: ImageRecord | None = dataclasses.field(default=None, repr=False)
    dtype_here: str | None = None   # the compute dtype of the pipeline that drew it again
    storage_here: str | None = None  # how that pipeline keeps its weights (nbkit.weights.stored)

    @property
    def tokens(self) -> np.ndarray | None:
        return None if self.image is None else self.image.tokens

    @property
    def tokens_match(self) -> bool:
        """The same tokens as recorded (an upscaled PNG has none to compare: True)."""
        return self.kind == UPSCALED or (bool(self.recorded_tokens) and self.tokens_differing == 0)

    @property
    def matches(self) -> bool:
        """Within the contract: the same tokens, pixels within one level."""
        return self.tokens_match and self.most_levels <= 1

    def check(self) -> Reproduction:
        """This reproduction, or a ValueError that says why it differs and what to do: a drawn image whose
        tokens differ (another dtype, weights kept another way, another jax), an upscaled one more than one
        level apart."""
        if self.kind == UPSCALED:
            if not self.matches:
                raise ValueError(f"{self.png}: made again, it differs from the saved picture by up to "
                                 f"{self.most_levels} levels (more than one).")
            return self
        if self.recorded_tokens and not self.tokens_match:
            record, count = self.record, len(self.recorded_tokens)
            if self.storage_here is not None and record.storage != self.storage_here:
                raise ValueError(f"{self.png}: the regenerated image differs from the recorded one in "
                                 f"{self.tokens_differing} of {count} tokens: it was drawn with weights "
                                 f"kept as {record.storage}, and this pipeline keeps them as "
                                 f"{self.storage_here} (load it with weight_storage={record.storage!r}, or "
                                 f"--weight-storage {record.storage}).")
            if record.dtype is not None and record.dtype != self.dtype_here:
                raise ValueError(f"{self.png}: the regenerated image differs from the recorded one in "
                                 f"{self.tokens_differing} of {count} tokens: it was made in {record.dtype}, "
                                 f"and this pipeline runs {self.dtype_here} (load it with "
                                 f"dtype={record.dtype!r}, or --dtype {record.dtype}).")
            raise ValueError(f"{self.png}: the regenerated image differs from the recorded one in "
                             f"{self.tokens_differing} of {count} tokens. It was made with jax "
                             f"{record.jax_version} (this is jax {jax.__version__}); a jax whose random "
                             f"numbers differ cannot make it again.")
        return self


def record_task(record: ImageRecord) -> tuple[ImageTask, SamplingSettings]:
    """The one image a record describes, as a task — built directly, not by listing the request it was
    part of (a crafted record may name prompt 2³¹; `ImageRecord` bounds what it may say)."""
    kept = None
    if record.kept_mask:     # kept tokens come out exactly as given: the image's own tokens hold them
        kept = KeptTokens.from_record(np.asarray(record.tokens), record.kept_mask)
    try:
        settings = SamplingSettings(**dict(record.settings))
    except TypeError as error:
        raise ValueError(f"The recorded settings {dict(record.settings)!r} are not sampling "
                         "settings.") from error
    check_prompts([record.prompt])
    return ImageTask(record.prompt, check_seed(record.seed), record.prompt_index, record.image_index,
                     record.negative_prompt, kept), settings


def is_upscaled(png: str | Path) -> bool:
    """Whether a PNG's metadata says it was upscaled from another (rather than drawn from tokens)."""
    try:
        return UPSCALED_FROM in read_png_metadata(Path(png))
    except ValueError:
        return False


def reproduce(pipe: Pipeline | None, png: str | Path, cache: str | Path | None = None,
              upscaler: Upscaler | None = None) -> Reproduction:
    """Makes the image a saved PNG records again and compares it with the saved one (tokens and pixels);
    `.check()` raises when it is outside the contract. A drawn PNG is drawn in the batch shape its record
    names (`Pipeline.make_again`), so that also in bfloat16 and float16 the tokens are the same, whatever
    `max_batch` this pipeline has; the pipeline must run the model the PNG names (another model makes
    another image: an error, not a silent difference), and for the same tokens keep its weights as the
    PNG records (`weight_storage`: float32 for a PNG that records none; `.check()` says which). An
    upscaled PNG needs no pipeline: its source beside it is upscaled again (`upscaler`, else the one its
    metadata names, from `cache`)."""
    png = Path(png)
    if is_upscaled(png):
        return _upscaled_again(png, upscaler, cache)
    if pipe is None:
        raise ValueError(f"{png} was drawn by a DALL·E model: give a Pipeline to make it again.")
    record = ImageRecord.from_metadata(read_png_metadata(png))
    if record.model != pipe.name:
        raise ValueError(f"{png} was made with the model {record.model!r}, but this pipeline runs "
                         f"{pipe.name!r}: load that model (Pipeline.from_pretrained({record.model!r}) "
                         f"or --model) to reproduce it.")
    task, settings = record_task(record)
    with _prng(record.jax_threefry_partitionable):     # in the batch shape it was drawn in (any dtype)
        image = pipe.make_again(task, settings, record.batch_size, record.batch_row)
    recorded = record.tokens
    differing = (int(np.sum(np.asarray(recorded) != image.tokens)) if len(recorded) == len(image.tokens)
                 else len(image.tokens))
    saved_levels = np.asarray(read_rgb(png), np.int16)
    if saved_levels.shape != image.pixels.shape:
        raise ValueError(f"{png} is {saved_levels.shape[1]}×{saved_levels.shape[0]} px, not one image "
                         f"of this model ({image.pixels.shape[1]}×{image.pixels.shape[0]}).")
    levels = np.abs(saved_levels - image.pixels)
    return Reproduction(png, DRAWN, image.pixels, int((levels.max(axis=-1) > 0).sum()), int(levels.max()),
                        image, recorded, differing, record, pipe.dtype, pipe.weight_storage)


def _upscaled_again(png: Path, upscaler: Any, cache: str | Path | None) -> Reproduction:
    """An upscaled PNG made again from its metadata: the source file named there, found beside the PNG
    (a plain name: never a path out of the folder) and checked by its sha256, through the upscaler
    named there (checked by its weights' sha256)."""
    from nbkit.generation.upscale import TileSettings, Upscaler

    metadata = read_png_metadata(png)
    source, record = metadata.get(UPSCALED_FROM), metadata.get(UPSCALER_KEY)
    if not (isinstance(source, dict) and isinstance(record, dict) and isinstance(source.get("file"), str)):
        raise ValueError(f"{png.name} is not an upscaled PNG (its metadata names no source and upscaler).")
    name = source["file"]
    if Path(name).name != name or name in ("", ".", ".."):
        raise ValueError(f"{png.name}: its source {name!r} is not a plain file name; not looking for it.")
    source_path = png.parent / name
    if not source_path.is_file():
        raise FileNotFoundError(f"{png.name} was made from {name}, which is not beside it in {png.parent}. "
                                "Put the source there to make it again.")
    picture = read_picture(source_path, MAX_IMAGE_PIXELS)
    if picture.sha256 != source.get("sha256"):
        raise ValueError(f"{name} is not the file {png.name} was made from (its sha256 differs).")
    if upscaler is None:
        settings = TileSettings(tile=int(record.get("tile", 256)), overlap=int(record.get("overlap", 32)))
        upscaler = Upscaler(str(record.get("name")), cache=cache, settings=settings)
    upscaler.load()
    if record.get("sha256") and upscaler.weights_sha256 != record["sha256"]:
        raise ValueError(f"{png.name} was made with weights of sha256 {record['sha256'][:12]}…, but "
                         f"{upscaler.model_name} has {upscaler.weights_sha256[:12]}…: give the same file.")
    pixels = upscaler.upscale([picture.pixels])[0]
    if picture.grey:
        pixels = np.asarray(Image.fromarray(pixels).convert("LA" if pixels.shape[2] == 4 else "L"))
    saved = np.asarray(read_image(png, max_pixels=MAX_IMAGE_PIXELS))
    if saved.shape != pixels.shape:
        raise ValueError(f"{png.name} is {saved.shape}, made again it is {pixels.shape}.")
    levels = np.abs(saved.astype(np.int16) - pixels.astype(np.int16))
    differing = int((levels.reshape(*levels.shape[:2], -1).max(axis=-1) > 0).sum())
    return Reproduction(png, UPSCALED, pixels, differing, int(levels.max(initial=0)))
