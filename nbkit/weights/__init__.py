"""Weights: the registry of named models; `hub`, which sends a name to its source (the Hugging Face hub,
W&B, release URLs) and keeps the verified download cache; and the readers that turn a folder or a
.pth / .safetensors file into placed parameter trees."""
