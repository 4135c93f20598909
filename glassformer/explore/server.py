"""`glassformer explore`: the walkthrough as a live page, served on this machine.

An ASGI app (Starlette) run by uvicorn. The page (static/explore.html) asks the JSON API for
the walkthrough of what the user types, with weights edited or heads removed; api.Explorer
computes the answers with the library's functions, one request at a time.

Safety, as the README describes it:
- bound to 127.0.0.1 by default, answering only requests addressed to a loopback name or the
  loopback address it is bound to (a web page elsewhere cannot reach it by DNS rebinding) and
  refusing requests another origin sends; on any other --host, every request needs the random
  access token the command prints; a malformed Host or Origin header is refused (400);
- no endpoint takes a file path: static files are looked up by name in a list made from two
  package folders (static/ and the walkthrough's templates/, *.js and *.css there), so `..`,
  encoded or not, finds nothing;
- the request body, the text, the edits and the values sent back are capped, each with a
  one-line JSON error, as are numbers beyond a float's range, integers of more than MAX_DIGITS
  digits and text that is not Unicode (lone surrogates); a genuine bug answers 500 with one
  line, its traceback only in the log.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import re
import secrets
import socket
import threading
import webbrowser
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from glassformer.explore.api import ApiError, Explorer, echo, one_line

STATIC = Path(__file__).resolve().parent / "static"  # the page: explore.html, .js, .css
TEMPLATES = Path(__file__).resolve().parent.parent / "explain" / "render" / "templates"  # walkthrough scripts
PAGE = "explore.html"
MAX_BODY = 64 * 1024  # bytes of a request body
MAX_DIGITS = 30  # digits of an integer in a body: every field's range (a seed: 2**63 - 1, 19 digits) is far below
# A Host header: a name or IPv4 address, or an IPv6 address in brackets, then an optional port (RFC 9110 7.2).
HOST_HEADER = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._~-]+))(?::(?P<port>[0-9]{1,5}))?")
TOKEN_HEADER = "X-Glassformer-Token"
TOKEN_COOKIE = "glassformer_token"  # set by GET /?token=..., so the page's own files load too
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
MODEL_KEY = "model"  # the one model of `glassformer explore --model DIR`
SMALL_MODEL = 20_000_000  # parameters: a smaller model is served on one thread (torch_threads)
HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
           "X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"}
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".json": "application/json", ".svg": "image/svg+xml",
         ".png": "image/png", ".ico": "image/x-icon"}

log = logging.getLogger("glassformer.explore")


# ---------------------------------------------------------------------------------------------
# Responses


def finite(data):
    """data with every NaN or infinity as a string ("NaN", "Infinity", "-Infinity"): strict JSON."""
    if isinstance(data, float) and not math.isfinite(data):
        return "NaN" if data != data else "Infinity" if data > 0 else "-Infinity"
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    return data


def json_response(data, status: int = 200) -> Response:
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:  # an edit made a value infinite: written as strings, as the walkthrough writes them
        data = finite(data)
        text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (a tokenizer's label, say) has no UTF-8: \uXXXX escapes instead
        body = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")
    return Response(body, status, headers=HEADERS, media_type="application/json")


def error(status: int, message: str) -> Response:
    return json_response({"error": one_line(message)}, status)


async def http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's own 404 (no such route) and 405 (wrong method), as JSON."""
    return error(exc.status_code, exc.detail or "error")


async def read_json(request: Request) -> dict:
    """The body as a JSON object, at most MAX_BODY bytes (read no further than that)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise ApiError(413, f"the request body is {length} bytes; at most {MAX_BODY}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise ApiError(413, f"the request body is over {MAX_BODY} bytes")

    try:
        data = json.loads(bytes(body).decode("utf-8"), parse_constant=constant, parse_int=bounded_int,
                          parse_float=bounded_float)
    except OutOfRange as e:
        raise ApiError(400, f"the body is not JSON this server reads: {e}") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise ApiError(400, f"the body is not JSON: {e}") from None
    except RecursionError:
        raise ApiError(400, "the body is not JSON this server reads: nested too deeply") from None
    surrogate = lone_surrogate(data)
    if surrogate is not None:
        raise ApiError(400, f"the body is not Unicode text: it has a lone surrogate {surrogate!r} "
                            "(half of a UTF-16 pair)")
    if not isinstance(data, dict):
        raise ApiError(422, "the body must be a JSON object")
    return data


class OutOfRange(ValueError):
    """A number in a body that no field could take (one line, naming it)."""


def constant(name):
    """json reads NaN and Infinity by default; strict JSON has neither."""
    raise ValueError(f"{name} is not JSON")


def bounded_int(text: str) -> int:
    """An integer of the body, refused past MAX_DIGITS digits: Python would parse 4,300 digits
    into an int no field accepts, and a longer one raises an error about its own settings."""
    digits = len(text.lstrip("-"))
    if digits > MAX_DIGITS:
        raise OutOfRange(f"an integer of {digits} digits is out of range (at most {MAX_DIGITS})")
    return int(text)


def bounded_float(text: str) -> float:
    """A number of the body with a fraction or exponent, refused where a float cannot hold it
    (1e400 would read as infinity)."""
    value = float(text)
    if not math.isfinite(value):
        shown = text if len(text) <= 24 else text[:24] + "…"
        raise OutOfRange(f"the number {shown} is out of range (a float's largest is about 1.8e308)")
    return value


def lone_surrogate(data) -> str | None:
    """A lone surrogate in a string, key or value of the parsed body (JSON may escape
    one, "\\ud800", but it is no character and has no UTF-8), or None. A stack, not recursion:
    the body may be nested as deeply as the JSON parser allows."""
    todo = [data]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            found = re.search("[\ud800-\udfff]", item)
            if found:
                return found.group()
        elif isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return None


def static_files(static: Path) -> dict[str, Path]:
    """Name -> file, for every file /static/ may serve: the page's folder, and the walkthrough's
    templates folder's scripts and styles (the page's own files win a clash of names)."""
    files = {}
    for folder, suffixes in ((TEMPLATES, (".js", ".css")), (static, None)):
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_file() and not path.name.startswith(".") and (suffixes is None or path.suffix in suffixes):
                    files[path.name] = path
    return files


def file_response(path: Path) -> Response:
    return FileResponse(path, media_type=TYPES.get(path.suffix, "application/octet-stream"), headers=HEADERS)


# ---------------------------------------------------------------------------------------------
# Who may ask


class Guard:
    """ASGI middleware: refuses requests addressed to another host name (where `hosts` is given),
    sent from another origin, or without the access token (where `token` is given)."""

    def __init__(self, app, token: str | None, hosts: tuple[str, ...] | None):
        self.app, self.token, self.hosts = app, token, hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refusal = self.refusal(Request(scope))
            if refusal is not None:
                await error(*refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, request: Request) -> tuple[int, str] | None:
        host = request.headers.get("host", "")
        name = host_name(host)
        if name is None:
            return 400, f"malformed Host header {echo(host)}: expected a name or address and an optional port"
        if self.hosts is not None and not allowed_host(name, self.hosts):
            return 403, f"this server answers only requests addressed to {' or '.join(self.hosts)}"
        origin = request.headers.get("origin")
        if origin is not None:
            origin_host = origin_netloc(origin)
            if origin_host is None:
                return 400, f"malformed Origin header {echo(origin)}: expected null or scheme://host[:port]"
            if origin_host != host:
                return 403, "requests from another origin are refused"
        if self.token is not None:
            given = (request.headers.get(TOKEN_HEADER) or request.query_params.get("token")
                     or request.cookies.get(TOKEN_COOKIE) or "")
            if not secrets.compare_digest(given.encode(), self.token.encode()):
                return 401, "this server needs its access token: open the address it printed (with ?token=...)"
        return None


def host_name(host: str) -> str | None:
    """The name or address of a Host header's value ("[::1]:8000" -> "::1"), lowercased; None
    where it is malformed (empty, non-ASCII, "[::1", "host:port:port", a port over 65535)."""
    match = HOST_HEADER.fullmatch(host)
    if match is None or (match["port"] is not None and int(match["port"]) > 65535):
        return None
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(match["ipv6"])
        except ValueError:
            return None
        return match["ipv6"].lower()
    return match["name"].lower()


def allowed_host(name: str, hosts: tuple[str, ...]) -> bool:
    """Whether a request addressed to `name` (host_name's) is one for this server: one of `hosts`,
    addresses compared by value (so 0:0:0:0:0:0:0:1 is ::1)."""
    if name in (h.lower() for h in hosts):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return any(address == known for known in map(ip_or_none, hosts) if known is not None)


def ip_or_none(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def origin_netloc(origin: str) -> str | None:
    """The host[:port] of an Origin header ("null" for an opaque origin), None where malformed."""
    if origin == "null":
        return origin
    scheme, sep, rest = origin.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme) or host_name(rest) is None:
        return None
    return rest


# ---------------------------------------------------------------------------------------------
# The app


def make_app(explorer: Explorer | dict[str, Explorer], token: str | None = None,
             hosts: tuple[str, ...] | None = LOOPBACK_NAMES, static: Path = STATIC) -> Guard:
    """The explorer as an ASGI app.

    Every /api/ request may name its model with the query parameter `model` (one of the keys of
    `explorer`; the first where it names none); /api/info lists them all under "models".

    Args:
        explorer: the model and what it answers, or several by key (the page opens on the first).
        token: the access token every request must carry (None: none needed).
        hosts: the host names requests may be addressed to (None: any).
        static: the page's folder (tests pass one of their own).
    """

    async def page(request: Request) -> Response:
        path = static / PAGE
        if not path.is_file():
            return error(404, f"the page is not installed: {PAGE} is missing from glassformer/explore/static")
        response = file_response(path)
        if token is not None and request.query_params.get("token") == token:
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    async def static_file(request: Request) -> Response:
        path = static_files(static).get(request.path_params["name"])
        return error(404, "no such static file") if path is None else file_response(path)

    async def answer(request: Request, compute) -> Response:
        """The JSON of `await compute()`; an ApiError as its status and one line; anything else is a
        bug of ours: its traceback goes to the log, the page gets one line."""
        try:
            return json_response(await compute())
        except ApiError as e:
            return error(e.status, str(e))
        except Exception:
            log.exception("glassformer explore: %s failed", request.url.path)
            return error(500, "internal error; the server's log has the details")

    explorers = explorer if isinstance(explorer, dict) else {MODEL_KEY: explorer}
    listed = [{"key": key, "name": e.name, "kind": "seq2seq" if e.seq2seq else "gpt"} for key, e in explorers.items()]

    def chosen(request: Request) -> tuple[str, Explorer]:
        key = request.query_params.get("model", next(iter(explorers)))
        if key not in explorers:
            raise ApiError(404, f"no model {echo(key)}; this server has {', '.join(explorers)}")
        return key, explorers[key]

    async def info(request: Request) -> Response:
        async def compute():
            key, chosen_explorer = chosen(request)
            data = await run_in_threadpool(chosen_explorer.info)
            return {**data, "model": key, "models": listed}

        return await answer(request, compute)

    async def call(request: Request) -> Response:
        async def compute():
            _, chosen_explorer = chosen(request)
            body = await read_json(request)
            return await run_in_threadpool(chosen_explorer.call, request.path_params["endpoint"], body)

        return await answer(request, compute)

    routes = [Route("/", page, methods=["GET"]), Route("/static/{name:path}", static_file, methods=["GET"]),
              Route("/api/info", info, methods=["GET"]), Route("/api/{endpoint}", call, methods=["POST"])]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    return Guard(app, token, hosts)


# ---------------------------------------------------------------------------------------------
# Serving


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def access(host: str) -> tuple[str | None, tuple[str, ...] | None]:
    """(the access token, the host names requests may be addressed to) for a server on `host`:
    on loopback no token and the loopback names, with the address it is bound to (127.0.0.2,
    say: the address it prints); on any other address a fresh random token."""
    if is_loopback(host):
        return None, LOOPBACK_NAMES if allowed_host(host.lower(), LOOPBACK_NAMES) else LOOPBACK_NAMES + (host,)
    return secrets.token_urlsafe(24), None


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one, which the socket then knows)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    return sock


def address(host: str, port: int, token: str | None) -> str:
    """The URL to open: a wildcard host is reached here through loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    name = f"[{host}]" if ":" in host else host
    return f"http://{name}:{port}/" + (f"?token={token}" if token else "")


def load(model_dir: str | None) -> tuple:
    """(subject, name): a checkpoint, or the articles' example (trained in half a second)."""
    import torch

    from glassformer.explain.walkthrough import builtin_subject, load_subject

    if model_dir is None:
        # One thread: the model is 6 wide, so threads only wait on each other; on a busy 2-core
        # machine its half second of training took 27 s with torch's two threads, 1.2 s with one.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return builtin_subject(), "the articles' example"
        finally:
            torch.set_num_threads(threads)
    return load_subject(model_dir), Path(model_dir).resolve().name


def load_models(model_dir: str | None) -> dict[str, tuple]:
    """key -> (subject, name) of the models to serve: the checkpoint at model_dir alone, or with
    none the village GPT shipped in the package (first: the page opens on it) and the articles'
    translation example."""
    if model_dir is not None:
        return {MODEL_KEY: load(model_dir)}
    from glassformer.explore import village

    return {"village": village.subject(), "articles": load(None)}


def torch_threads(explorers: dict[str, Explorer], threads: int = 0) -> int:
    """Sets torch's threads for serving (0: one for models under SMALL_MODEL parameters, torch's own
    choice otherwise) and returns how many. The explorer's work is many small operations, on which
    threads mostly wait for each other: on a loaded 2-core machine the village GPT's forward took
    146 ms with two threads and 3.8 ms with one (GPT-2 small's, 5.4-8.4 s and 1.3-1.4 s)."""
    import torch

    if threads == 0:
        largest = max(sum(p.numel() for p in e.model.parameters()) for e in explorers.values())
        threads = 1 if largest < SMALL_MODEL else torch.get_num_threads()
    torch.set_num_threads(threads)
    return threads


def serve(model_dir: str | None = None, host: str = "127.0.0.1", port: int = 0, browser: bool = True,
          lang: str = "en", say=print, threads: int = 0) -> int:
    """Loads the model, prints the one line with the address, opens the browser and serves until
    interrupted (uvicorn turns Ctrl-C into a clean shutdown, then lets the KeyboardInterrupt through).
    threads: torch's threads (0: see torch_threads).

    Raises ValueError/OSError for a model that cannot be loaded or an address that cannot be bound.
    """
    import uvicorn

    token, hosts = access(host)
    sock = bind(host, port)  # first: a port in use is said before the model is loaded
    try:
        explorers = {key: Explorer(subject, name, lang) for key, (subject, name) in load_models(model_dir).items()}
        torch_threads(explorers, threads)
        app = make_app(explorers, token, hosts)
        url = address(host, sock.getsockname()[1], token)
        say(f"glassformer explore: {url}", flush=True)
        if browser:  # the socket already listens: the browser's request waits for the server
            threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", log_config=None)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0
