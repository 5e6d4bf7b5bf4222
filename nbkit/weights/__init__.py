"""Weights: the registry of named models, the download cache (hub, W&B, local folders), and the
streaming checkpoint reader that turns a folder into placed parameter trees."""
