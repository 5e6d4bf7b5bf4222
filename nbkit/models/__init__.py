"""The architectures, as Flax modules: DalleBart (text → image tokens), the VQGAN (image tokens ↔
pixels) and CLIP (image–text scores). Configs are read from a checkpoint's config.json; how checkpoint
tensors map onto these modules lives in `nbkit.weights`."""
