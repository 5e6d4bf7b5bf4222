"""What happens to finished images: PNGs with metadata and grids, run folders that never lose or
overwrite a file, resumable runs, upscaled copies beside the originals, and ranking with CLIP."""
