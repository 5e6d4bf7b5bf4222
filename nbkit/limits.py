"""Every bound nbkit puts on what it reads from outside, in one place: the image reader, the server's
protocol and its HTTP settings read them from here, and docs/security.md states them (its test checks
that the numbers there are these).

The numbers are far above any real use and low enough that no single input costs much memory or time.
"""

from __future__ import annotations

# ---- images (nbkit/imagefile.py: every image file nbkit reads goes through it)
# The largest picture read at all: an upscale of the largest source (2048² × 4²) is read back when it
# is reproduced. Decoded as 8-bit RGBA that is 256 MiB, checked from the header before decoding.
MAX_IMAGE_PIXELS = 8192 * 8192
# The largest picture taken as an input: a source to vary, extend, fill, rerank or upscale (the
# upscaler's own default limit, TileSettings.max_pixels, is this too).
MAX_SOURCE_PIXELS = 2048 * 2048
# Longest side over shortest side: a 1×100000 picture is refused (CLIP scales the short side to 224,
# which would make it 224×22,400,000). A stitched extension of 10 pieces is about 11:1.
MAX_ASPECT_RATIO = 32
# Formats read (Pillow's names); others are refused before any plugin parses more than the header.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")

# ---- what a request may say (nbkit/server/protocol.py)
MAX_BODY_BYTES = 64 * 1024       # a request body (413 above)
MAX_JSON_DEPTH = 32              # arrays and objects nested in a body (400 above)

# ---- connections (nbkit/server/launch.py)
HEADER_TIMEOUT_S = 10.0          # a connection's request line and headers must arrive within this
BODY_TIMEOUT_S = 10.0            # and its body within this once the headers are in (408 after)
KEEP_ALIVE_S = 5                 # an idle kept-alive connection is closed after this
MAX_CONNECTIONS = 200            # open connections; requests beyond get 503 (event streams count)
MAX_HEADER_BYTES = 16 * 1024     # the request line and headers together (h11's incomplete-event limit)
