"""The registry of named models (nbkit/weights/registry.py): its sizes, memory needs and parameter table
agree with the architectures."""

from __future__ import annotations

from nbkit.weights import registry


def test_registry_sizes_agree_with_the_architectures():
    """A float32 checkpoint is its parameters × 4 bytes plus a little msgpack framing."""
    for name in ("mini", "clip-l14"):
        model = registry.MODELS[name]
        weights = next(f for f in model.files if f.filename == "flax_model.msgpack")
        framing = weights.size - 4 * registry.parameter_count(model.kind, model.architecture)
        assert 0 < framing < 1 << 20, (name, framing)
    for model in registry.MODELS.values():
        assert model.license_url.startswith("https://") and model.download_bytes > 0


def test_memory_needed_is_weights_and_cache_at_the_dtype_size_plus_the_documented_overhead():
    """Weights (parameters × bytes per value), plus for DalleBart the decoder's key/value cache for 8 images
    (keys and values, every layer, twice for super-conditioning) and 1/4 GiB; 1/2 GiB for the pixel models."""
    from nbkit.models.dallebart import PUBLISHED_ARCHITECTURES
    for model in registry.MODELS.values():
        count = registry.parameter_count(model.kind, model.architecture)
        for dtype, size in (("bfloat16", 2), ("float16", 2), ("float32", 4)):
            if model.kind == registry.DALLEBART:
                config = PUBLISHED_ARCHITECTURES[model.architecture]
                cached = 2 * config.decoder_layers * 2 * 8 * (config.image_length + 1) * config.d_model
                expected = (count + cached) * size + registry.GIB // 4
            else:
                expected = count * size + registry.GIB // 2
            assert registry.memory_needed(model, dtype) == expected, (model.name, dtype)
    mega_and_vqgan = sum(registry.memory_needed(registry.MODELS[n], "float16") for n in ("mega", "vqgan"))
    assert round(mega_and_vqgan / registry.GIB, 1) == 6.4          # the notebook's "~6.4 GiB in 16 bits"


def test_the_parameter_table_is_what_the_architectures_count():
    """`nbkit info` reads the table (building no model); this counts every architecture again."""
    seen = {(model.kind, model.architecture) for model in registry.MODELS.values()}
    assert seen == set(registry.PARAMETER_COUNTS)
    for kind, architecture in sorted(seen):
        counted = registry.counted_parameters(kind, architecture)
        assert counted == registry.PARAMETER_COUNTS[kind, architecture], (kind, architecture)
