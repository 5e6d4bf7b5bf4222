"""What every request passes before a route sees it: the token, the Host, the Origin, the content type,
and CORS. Written by hand as one ASGI middleware, not with Starlette's CORSMiddleware and
TrustedHostMiddleware, because each rule depends on the route and on whether a token is set: the
dalle-playground page may call only the playground's routes, `/t/<token>/…` is moved onto the routes
(as the ASGI root path), and the Host rule applies only to a server without a token.

What it protects against (see the README's security paragraph):
- DNS rebinding: a token-less server answers only Host names of this machine (localhost, 127.0.0.1,
  [::1], with its port) and those given with --allow-host, so a page that points its own name at
  127.0.0.1 is refused (421).
- Cross-site writes: a state-changing request (POST, DELETE) whose Origin is not the server's own (the
  Host it was sent to, whatever --allow-host allows), not
  given with --cors-origin and not the playground's page on its routes, or that says
  `Sec-Fetch-Site: cross-site` without an Origin, is refused (403); /api/ POSTs must be
  `application/json`, which a page on another site cannot send without a CORS preflight.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import RedirectResponse, Response

from nbkit.server.protocol import error_response

PLAYGROUND_ORIGIN = "https://saharmor.github.io"      # where the dalle-playground page is served from
PLAYGROUND_ROUTES = ("/", "/dalle", "/generate")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# Colab's port proxy (google.colab.kernel.proxyPort, behind output.serve_kernel_port_as_iframe) reaches
# a kernel port as localhost:<port> (the only address colabtools gives it: html/_provide.py and
# output/_util.py write https://localhost:<port>/…), which is loopback. The page it shows comes from the
# proxy's own names, so its Origin (and, should the proxy pass its own name on, the Host) is one of
# these; they are Google's names, which no other site can point at this machine.
COLAB_PROXY_HOSTS = (".colab.dev", ".colab.googleusercontent.com")
ALLOWED_HEADERS = ("authorization", "bypass-tunnel-reminder", "content-type", "accept", "cache-control",
                   "last-event-id")
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether a request may go on; if so, its route path and the `/t/<token>` prefix it came under."""

    status: int
    message: str = ""
    route: str = "/"
    prefix: str = ""


@dataclasses.dataclass(frozen=True)
class GateRules:
    """The gate's settings: the token (None: none), --cors-origin values, --allow-host values, and the
    port the server listens on (a loopback Host must name it)."""

    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    allow_hosts: tuple[str, ...] = ()
    port: int = 0


def split_token_path(path: str) -> tuple[str | None, str]:
    """'/t/<token>/rest' → ('<token>', '/rest'); any other path → (None, path)."""
    if not path.startswith("/t/"):
        return None, path
    token, _, rest = path[3:].partition("/")
    return token, "/" + rest


def authorize(path: str, authorization: str | None, token: str | None) -> Verdict:
    """With a token set, a request needs it in its path (/t/<token>/…) or as `Authorization: Bearer`."""
    given, route = split_token_path(path)
    if token is None:
        return Verdict(200, route=path)
    same = lambda text: secrets.compare_digest(text.encode(), token.encode())
    if given is not None:
        if same(given):
            return Verdict(200, route=route, prefix=f"/t/{given}")
        return Verdict(403, "Wrong token in the address: use the address the server printed (…/t/<token>/).")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and same(value.strip()):
            return Verdict(200, route=path)
        return Verdict(403, "Wrong token: send Authorization: Bearer <the token the server printed>.")
    return Verdict(401, "This server needs its token: open the address it printed (…/t/<token>/), or send "
                        "Authorization: Bearer <token>.")


def split_host(host: str) -> tuple[str, int | None]:
    """'name:port' / '[::1]:port' / 'name' → (lower-case name, port or None); ('', None) if malformed."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else (None if not rest else "x")
    else:
        name, _, port = host.partition(":") if host.count(":") <= 1 else (host, "", None)
        port = port or None
    if port is not None and not (port.isascii() and port.isdigit() and len(port) <= 5):
        return "", None
    return name, None if port is None else int(port)


def host_matches(name: str, port: int | None, allowed: str) -> bool:
    """One --allow-host value: `name` (any port), `name:port`, `.suffix` (its subdomains), or `*`."""
    if allowed == "*":
        return True
    allowed_name, allowed_port = split_host(allowed)
    if allowed_port is not None and allowed_port != port:
        return False
    if allowed_name.startswith("."):
        return name.endswith(allowed_name)
    return name == allowed_name


def host_allowed(host: str | None, rules: GateRules) -> bool:
    """Without a token: a loopback name with the server's port, or a name --allow-host gives."""
    if rules.token is not None:
        return True
    name, port = split_host(host or "")
    if not name:
        return False
    if name in LOOPBACK_NAMES and port == rules.port:
        return True
    return any(host_matches(name, port, allowed) for allowed in rules.allow_hosts)


def cross_origin_allowed(origin: str | None, route: str, rules: GateRules) -> bool:
    """CORS: origins given with --cors-origin (or `*`) may call every route; the dalle-playground page
    only its own routes. The server's own page is same-origin and needs nothing."""
    if not origin:
        return False
    if "*" in rules.cors_origins or origin in rules.cors_origins:
        return True
    return origin == PLAYGROUND_ORIGIN and route in PLAYGROUND_ROUTES


def same_origin(origin: str, host: str | None, rules: GateRules) -> bool:
    """An Origin that is this server: the very Host it was called by (which has passed `host_allowed`).
    --allow-host says which names may *address* the server, never which sites are *trusted*: a page on
    another name (under a `.suffix`, or any under `*`) is cross-site, and needs --cors-origin."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or host is None:
        return False
    return parts.netloc.lower() == host.strip().lower()


def write_allowed(method: str, origin: str | None, fetch_site: str | None, host: str | None, route: str,
                  rules: GateRules) -> bool:
    """Whether a state-changing request may come from where it says it comes from. Clients that are not
    browsers (curl, the official app's backend.py) send no Origin and are let through."""
    if method not in STATE_CHANGING:
        return True
    if origin is None:
        return fetch_site != "cross-site"
    return same_origin(origin, host, rules) or cross_origin_allowed(origin, route, rules)


def json_required(method: str, route: str, content_type: str | None) -> bool:
    """Whether an /api/ POST lacks `Content-Type: application/json`."""
    if method != "POST" or not route.startswith("/api/"):
        return False
    return (content_type or "").split(";")[0].strip().lower() != "application/json"


def preflight_headers(origin: str, requested_headers: str, private_network: bool) -> dict[str, str]:
    asked = [h.strip().lower() for h in requested_headers.split(",") if h.strip()]
    headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
               "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
               "Access-Control-Allow-Headers": ", ".join(h for h in asked if h in ALLOWED_HEADERS)
               or ", ".join(ALLOWED_HEADERS),
               "Access-Control-Max-Age": "600"}
    if private_network:      # Chrome asks before a public page may call a server on this machine
        headers["Access-Control-Allow-Private-Network"] = "true"
    return headers


def _wants_page(headers: Headers) -> bool:
    return "text/html" in headers.get("accept", "") and "bypass-tunnel-reminder" not in headers


class Gate:
    """ASGI middleware: checks the Host, answers CORS preflights, checks the token, the Origin of writes
    and the content type, moves /t/<token>/ routes into place, and adds CORS headers for allowed
    origins."""

    def __init__(self, app: Any, rules: GateRules):
        self.app, self.rules = app, rules

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rules = self.rules
        headers = Headers(scope=scope)
        origin, host, method = headers.get("origin"), headers.get("host"), scope["method"]
        if not host_allowed(host, rules):
            name = split_host(host or "")[0] or "(none)"
            await error_response(421, "host", f"This server answers only to this machine's names (localhost, "
                                              f"127.0.0.1) without a token, not Host {name}: start it with "
                                              f"--allow-host {name} if that name is yours, or give it a "
                                              "--token.")(scope, receive, send)
            return
        route = split_token_path(scope["path"])[1] if rules.token else scope["path"]
        allowed = cross_origin_allowed(origin, route, rules)
        if method == "OPTIONS" and origin and "access-control-request-method" in headers:
            if allowed:
                response = Response(status_code=204, headers=preflight_headers(
                    origin, headers.get("access-control-request-headers", ""),
                    "access-control-request-private-network" in headers))
            else:
                response = error_response(403, "origin", f"Calls from {origin} are not allowed: start "
                                                         f"the server with --cors-origin {origin} (or * "
                                                         "for any).")
            await response(scope, receive, send)
            return
        cors = {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                "Access-Control-Expose-Headers": "Retry-After"} if allowed else {}
        verdict = authorize(scope["path"], headers.get("authorization"), rules.token)
        if verdict.status != 200:
            await error_response(verdict.status, "token", verdict.message, cors)(scope, receive, send)
            return
        if not write_allowed(method, origin, headers.get("sec-fetch-site"), host, verdict.route, rules):
            shown = origin or "another site"
            await error_response(403, "origin", f"{method} from {shown} is refused: only this server's own "
                                                f"page may change things, unless it is started with "
                                                f"--cors-origin {origin or 'ORIGIN'}.")(scope, receive, send)
            return
        if json_required(method, verdict.route, headers.get("content-type")):
            await error_response(415, "content-type", "Send the body as JSON with Content-Type: "
                                                      "application/json.", cors)(scope, receive, send)
            return
        if verdict.prefix:
            if scope["path"] == verdict.prefix and _wants_page(headers):
                await RedirectResponse(verdict.prefix + "/", 307)(scope, receive, send)
                return
            path = verdict.prefix + verdict.route
            scope = {**scope, "path": path, "raw_path": path.encode(),
                     "root_path": scope.get("root_path", "") + verdict.prefix}

        async def send_with_cors(message: dict) -> None:
            if message["type"] == "http.response.start" and cors:
                MutableHeaders(scope=message).update(cors)
            await send(message)

        await self.app(scope, receive, send_with_cors)
