"""`python -m nbkit serve`: its options, checked before the models load, and starting the server.

Only argparse is imported at module level: the CLI imports this module whenever it builds its parser,
and `--help` must not start jax.
"""

from __future__ import annotations

import argparse

from nbkit.arguments import add_model_arguments, add_storage_argument

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
TOKEN_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
MIN_TOKEN_LENGTH = 8


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be ≥ 1")
    return value


def _replicas(text: str) -> int | str:
    """--replicas: a whole number ≥ 1, or "deployed" (use those already running on --ray-address)."""
    return "deployed" if text.strip().lower() == "deployed" else _positive(text)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0–65535; 0 picks a free one)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_storage_argument(parser)
    parser.add_argument("--clip", default="clip-b32",
                        help="CLIP model for reranking, loaded on the first rerank (default clip-b32; "
                             "'none' turns reranking off)")
    parser.add_argument("--upscaler", default="esrgan-x4",
                        help="Real-ESRGAN model for the Upscale button, loaded on the first upscale (default "
                             "esrgan-x4; esrgan-anime, esrgan-x2, esrgan-fast, a weights file; 'none': off)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; any other "
                             "needs a token, generated and printed if not given)")
    parser.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0: any free one)")
    parser.add_argument("--out", help="output folder (default: $NBKIT_OUTPUT, Drive on Colab, "
                                      "~/nbkit/outputs)")
    parser.add_argument("--token", help="require this token: in the address (/t/TOKEN/) or as "
                                        "Authorization: Bearer TOKEN")
    parser.add_argument("--max-queue", type=_positive, default=16,
                        help="unfinished jobs accepted at once; more get 429 and Retry-After (default 16)")
    parser.add_argument("--max-images", type=_positive, default=16, help="images per job (default 16)")
    parser.add_argument("--max-batch", type=_positive,
                        help="images drawn together in one batch, from one or several jobs (default: 8 "
                             "per accelerator, 4 on CPU)")
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="a web page origin (https://example.com) that may call the API; repeat for "
                             "more, * for any (the dalle-playground page may always call its routes)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="without a token, the server answers only to this machine's names "
                             "(localhost, 127.0.0.1, ::1): also answer to NAME (NAME:PORT for one port, "
                             ".example.com for its subdomains), e.g. a tunnel's or a reverse proxy's name; "
                             "repeat for more")
    parser.add_argument("--preview-every", type=int, default=64, metavar="TOKENS",
                        help="while someone watches a job, show its progress every this many tokens, "
                             "with previews where decoding them takes at most a quarter of the time "
                             "(default 64; 0: no previews, progress between batches only)")
    cluster = parser.add_argument_group("replicas (Ray Serve; pip install 'nbkit[cluster]')")
    cluster.add_argument("--replicas", type=_replicas, metavar="N",
                         help="make images on N Ray Serve replicas, each with its own Pipeline on its own "
                              "accelerator, with a batch in flight on each (default: none, one Pipeline in "
                              "this process); starts a local Ray on 127.0.0.1 unless --ray-address; "
                              "'deployed': use the replicas already running there (KubeRay, serve deploy)")
    cluster.add_argument("--ray-address", metavar="ADDR",
                         help="join this Ray cluster (HOST:6379, auto, ray://HOST:10001) instead of starting "
                              "a local one; a Ray cluster has no authentication: never expose its ports")
    cluster.add_argument("--replica-resources", default="num_cpus=1", metavar="NAME=AMOUNT,...",
                         help="what each replica takes from Ray: num_cpus=1 (default), num_gpus=1, "
                              "num_cpus=8,TPU=4 (a TPU host)")


def resolve_token(host: str, token: str | None, new_token) -> tuple[str | None, bool]:
    """The token to require, and whether it was made here: a given one is checked; one listening beyond
    this machine without one gets `new_token()`."""
    if token is not None:
        if len(token) < MIN_TOKEN_LENGTH or any(c not in TOKEN_CHARACTERS for c in token):
            raise ValueError(f"--token must be at least {MIN_TOKEN_LENGTH} letters, digits, - or _ (it goes "
                             "in addresses); leave it out to have one made.")
        return token, False
    if host in LOCAL_HOSTS:
        return None, False
    return new_token(), True


def check_origins(origins: list[str]) -> tuple[str, ...]:
    """--cors-origin values: `*`, or scheme://host[:port] without a path (a trailing / is dropped)."""
    checked = []
    for origin in origins:
        origin = origin.rstrip("/")
        scheme, separator, rest = origin.partition("://")
        if origin != "*" and (scheme not in ("http", "https") or not separator or not rest or "/" in rest):
            raise ValueError(f"--cors-origin {origin!r} is not an origin: give scheme and host, such as "
                             "https://example.com or http://localhost:3000, or * for any.")
        checked.append(origin)
    return tuple(checked)


def check_hosts(hosts: list[str]) -> tuple[str, ...]:
    """--allow-host values: a host name (or .suffix), optionally with :port, without scheme or path."""
    checked = []
    for host in hosts:
        host = host.strip().lower()
        if not host or "/" in host or "@" in host or " " in host:
            raise ValueError(f"--allow-host {host!r} is not a host name: give a name such as "
                             "my-tunnel.example or my-tunnel.example:443 (no scheme or path), .example.com "
                             "for its subdomains.")
        checked.append(host)
    return tuple(checked)


def run(args: argparse.Namespace) -> None:
    import secrets
    import sys

    from nbkit.places import output_root

    token, generated = resolve_token(args.host, args.token, lambda: secrets.token_urlsafe(16))
    origins = check_origins(args.cors_origin)
    if args.preview_every < 0:
        raise ValueError(f"--preview-every must be ≥ 0 (got {args.preview_every}); 0 turns previews off.")
    replicas = args.replicas
    if args.ray_address and replicas is None:
        raise ValueError("--ray-address needs --replicas: N to start N replicas on that cluster, or "
                         "'deployed' to use the ones running there.")
    if replicas == "deployed" and not args.ray_address:
        raise ValueError("--replicas deployed uses the replicas running on a cluster: give its "
                         "--ray-address.")
    if replicas is not None:
        from nbkit.server.replicas.ray_pool import parse_replica_resources

        resources = parse_replica_resources(args.replica_resources)
    out = output_root(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from nbkit.generation.pipeline import Pipeline
    from nbkit.server.launch import launch
    from nbkit.server.options import ServerOptions

    clip = None if args.clip.lower() == "none" else args.clip
    options = ServerOptions(out=out.resolve(), host=args.host, token=token, cors_origins=origins,
                            allow_hosts=check_hosts(args.allow_host), max_queue=args.max_queue,
                            max_images=args.max_images, preview_every=args.preview_every or None,
                            model=args.model, vqgan=args.vqgan, clip=clip, cache=args.cache,
                            upscaler=None if args.upscaler.lower() == "none" else args.upscaler)

    def load():
        if replicas is None:
            return Pipeline.from_pretrained(args.model, args.vqgan, dtype=args.dtype,
                                            max_batch=args.max_batch, cache=args.cache,
                                            compilation_cache=args.compilation_cache,
                                            weight_storage=args.weight_storage)
        from nbkit.server.replicas.deployment import ReplicaModel
        from nbkit.server.replicas.ray_pool import PoolConfig, RayPool

        model = ReplicaModel(args.model, args.vqgan, args.dtype, args.max_batch, args.cache,
                             args.compilation_cache, args.weight_storage)
        deployed = replicas == "deployed"
        return RayPool(PoolConfig(1 if deployed else replicas, model, resources, args.ray_address,
                                  deploy=not deployed))

    def announce(running, loaded) -> None:
        if isinstance(loaded, Pipeline):
            devices = f"{loaded.mesh.devices.size} {loaded.mesh.devices.flat[0].platform} device(s)"
        else:
            ready = loaded.ready()
            devices = f"{len(ready)} of {len(loaded.replicas)} replica(s) ready" + \
                (f" ({ready[0].device} each)" if ready else "")
        model = running.pool.model
        batches = f"batches of up to {model.max_batch}" if model else "no replica ready yet"
        print(f"nbkit: {args.model} on {devices}, {batches}; images go to {out}",
              file=sys.stderr, flush=True)
        if generated:
            print(f"nbkit: listening on {args.host}, so a token is required: it is {token} (anyone with it "
                  "can use this server; give --token to choose one)", file=sys.stderr, flush=True)
        print(f"nbkit serving on {running.url}", flush=True)       # last: it says the server is ready

    launch(options, args.port, load, background=False, announce=announce)
