"""min-dalle on whatever torch device is here, for the GPU check (bench/device_check.py starts it).

    python bench/peers/min_dalle_device.py --mega --dtype bfloat16 --grid 3     # Mega 3×3, its headline
    python bench/peers/min_dalle_device.py --tiny --grid 1                      # the CPU check's size

As run_min_dalle.py does on CPU: min-dalle's own encoder and decoder classes with random weights
(built on the device, nothing read or downloaded), a fixed 10-token prompt instead of its
tokenizer, and its own `generate_raw_image_stream` timed from prompt tokens to image tokens
(256 decoder steps, supercondition_factor 10, top_k 50, temperature 1); no VQGAN decode (its
detokenizer would need real weights to be worth timing). A first call, then a timed one.
`--tiny` keeps min-dalle's code and shrinks its sizes (2 layers, width 64), for a CPU.
Prints one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import warnings

from _peer_common import CONDITION_SCALE, TOP_K, forbid_network, prompt_tokens, versions

try:
    import torch
    from min_dalle import MinDalle
    from min_dalle.models import DalleBartDecoder, DalleBartEncoder
except ImportError as error:
    sys.exit(f"error: {error}: min-dalle is not installed for {sys.executable}")

warnings.filterwarnings("ignore", message=".*autocast.*")   # its CUDA autocast, on CPU: a no-op
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TINY = {"layer_count": 2, "attention_head_count": 4, "embed_count": 64, "glu_embed_count": 96}


class FixedPromptTokenizer:
    def tokenize(self, text: str, is_verbose: bool = False) -> list[int]:
        return prompt_tokens()


class RandomMinDalle(MinDalle):
    """MinDalle with random weights made on its device; `tiny` shrinks the widths after its own
    __init__ has set them (and before it builds the modules, which it does last)."""

    tiny = False

    def init_tokenizer(self) -> None:
        self.tokenizer = FixedPromptTokenizer()
        if self.tiny:
            self.__dict__.update(TINY)

    def init_encoder(self) -> None:
        with torch.device(self.device):
            self.encoder = DalleBartEncoder(
                attention_head_count=self.attention_head_count, embed_count=self.embed_count,
                glu_embed_count=self.glu_embed_count, text_token_count=self.text_token_count,
                text_vocab_count=self.text_vocab_count, layer_count=self.layer_count, device=self.device,
            ).to(self.dtype).eval()

    def init_decoder(self) -> None:
        with torch.device(self.device):
            self.decoder = DalleBartDecoder(
                image_vocab_count=self.image_vocab_count, attention_head_count=self.attention_head_count,
                embed_count=self.embed_count, glu_embed_count=self.glu_embed_count,
                layer_count=self.layer_count, device=self.device,
            ).to(self.dtype).eval()

    def init_detokenizer(self) -> None:
        self.detokenizer = None

    def image_grid_from_tokens(self, image_tokens, is_seamless: bool, is_verbose: bool = False):
        return image_tokens.clone()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mega", action="store_true")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--grid", type=int, default=2, help="grid side: grid² images (default 2)")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    forbid_network()
    torch.manual_seed(0)
    if args.tiny:
        torch.set_num_threads(1)    # tiny products: threads only wait on each other (min-dalle takes all)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    RandomMinDalle.tiny = args.tiny
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:   # MinDalle makes its model folders; nothing is put there
        model = RandomMinDalle(models_root=root, dtype=DTYPES[args.dtype], device=device, is_mega=args.mega,
                               is_reusable=True, is_verbose=False)
    build_s = time.perf_counter() - started
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run(seed: int) -> float:
        began = time.perf_counter()
        stream = model.generate_raw_image_stream(
            text="(fixed tokens)", seed=seed + 1, grid_size=args.grid, progressive_outputs=False,
            temperature=1, top_k=TOP_K, supercondition_factor=int(CONDITION_SCALE))
        tokens = next(stream).cpu()
        sync()
        seconds = time.perf_counter() - began
        if tokens.shape != (args.grid ** 2, 256) or int(tokens.min()) < 0 \
                or int(tokens.max()) >= model.image_vocab_count:
            sys.exit(f"error: expected ({args.grid ** 2}, 256) image tokens in range, "
                     f"got {tuple(tokens.shape)}")
        return seconds

    first_s = run(0)
    tokens_s = run(1)
    if device == "cuda":
        peak, peak_kind = torch.cuda.max_memory_allocated(), "device"
    else:
        peak, peak_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host RSS"
    weights = sum(p.numel() * p.element_size() for p in model.decoder.parameters())
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(json.dumps({"impl": "min-dalle", "device": name,
                      "images": args.grid ** 2, "first_call_s": first_s, "tokens_s": tokens_s,
                      "build_s": build_s, "tokens_per_s": args.grid ** 2 * 256 / tokens_s,
                      "peak_bytes": peak, "peak_kind": peak_kind, "decoder_weight_bytes": weights,
                      "versions": versions("min-dalle", "torch")}), flush=True)


if __name__ == "__main__":
    main()
