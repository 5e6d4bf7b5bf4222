"""Text → tokens: the training-time text normalizer and the BART and CLIP tokenizers."""
