"""The local page of `scratchgpt explore`, served by the standard library's HTTP server.

    GET  /          the page: one HTML file with its script and style inline, system fonts
    GET  /info      the models' names and shapes, and the page's default settings (JSON)
    POST /generate  {"prompt": ..., "temperature": "0.8", ...} -> a stream of JSON lines:
                    start (the seed and the prompt's tokens), token (one per new token),
                    compare (the whole text under --compare's model, if any), end (and
                    whether the model ended the text: "end_of_text")

Every refusal is a 4xx with one JSON line, {"error": "..."}: a bad prompt or setting, a
malformed request (a bad or missing Content-Length, a body shorter than it says, a wrong
method, a bad request line), a missing token, or a request that another site's page may have
sent (below).

On a loopback address (the default, 127.0.0.1) the page is this machine's alone. Listening on
any other address is a choice made visible: a warning line, and a secret token in the printed
address (`?token=...`, as Jupyter does) that every request must carry; the page passes its own
on to its requests.

Other sites' pages run in the same browser, which reaches 127.0.0.1 for them too; so, on any
address, three checks keep them out, as Jupyter's and other local servers' do:
- Host must name this server: localhost, 127.0.0.1, [::1] or what --host named (on 0.0.0.0,
  also any address and this machine's name). A DNS-rebinding page, whose own name has come to
  mean 127.0.0.1, sends that name, and would otherwise read every answer as its own.
- Origin, where a request carries one, must be the page's own: a browser sends another site's
  POST without asking when its body is text/plain or a form, but says whose page sent it.
- /generate reads only application/json, a type that a browser sends across sites only after
  asking first (a CORS preflight, which is refused here), Origin or not.

Why not Gradio, the field's usual library for model demos (weighed on Gradio 6.31.0)?
- Size: a 31 MB wheel (80 MB unpacked) and 52 packages in its closure (FastAPI, Uvicorn,
  Pydantic, huggingface_hub, ...), against none here beyond the standard library.
- Offline: it sends usage analytics to api.gradio.app and checks for a newer version there at
  every launch unless GRADIO_ANALYTICS_ENABLED=False is set, and its front end still carries
  Google Fonts addresses for its themes; this page fetches nothing and its Content-Security-
  Policy forbids any other origin.
- Fit: the views this page exists for (ten candidates on hovering a token, a heat map that
  grows token by token, clicking a token to see what it looked at) are not among its
  components; they would be custom HTML and JavaScript inside Gradio anyway.
One page over ThreadingHTTPServer, streaming JSON lines to `fetch`, is less code than that.

The server reads no file at run time: the models were loaded at start-up and the page is read
once when this module is imported. Requests are served one generation at a time (the models'
attention modules keep the weights of their latest pass), which suits a page on one's own machine.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import tiktoken
import torch

from scratchgpt.errors import ScratchGPTError, reason, warn
from scratchgpt.explore.trace import ATTENTION_SCALE, score, trace_continuation
from scratchgpt.generate import Sampling, stop_id, text_to_token_ids
from scratchgpt.model import GPT
from scratchgpt.params import MAX_SEED, Quantize, SampleParams, parse_flag
from scratchgpt.quantize import quantize
from scratchgpt.saved_model import load_model

PAGE = resources.files(__package__).joinpath("page.html").read_bytes()
# The page may run its own inline script and style and talk to this server, and nothing else.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'"
)
MAX_REQUEST_BYTES = 1 << 20  # far above any prompt that fits a context
# The longest pause allowed while a request's body arrives (the page sends it at once): a client
# that announces more bytes than it sends is answered promptly instead of holding a thread.
BODY_TIMEOUT_S = 1.0
# Each path and the one method it answers.
ROUTES = {"/": "GET", "/info": "GET", "/generate": "POST"}
# The names of this machine that every browser knows, as a Host header writes them.
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
# A Host header: a name, an IPv4 address or an IPv6 one in brackets, perhaps then a port. The port
# is not checked: an SSH tunnel (`ssh -L 9000:127.0.0.1:8765`) makes the page's port another.
HOST_HEADER = re.compile(r"(?P<name>\[[0-9a-f:.]+\]|[^\[\]:]+)(?::\d+)?", re.IGNORECASE)
# The page's sampling controls, checked like the `sample` keys of the same names (and like
# `scratchgpt generate`'s flags); their defaults are generate's, but for max_new_tokens, which
# must fit in the context beside the prompt (see `Explorer.info`).
SETTINGS = ("max_new_tokens", "stop_at_end_of_text", "temperature", "top_k", "top_p", "repetition_penalty", "min_p",
            "seed")
PAGE_DEFAULTS = {"stop_at_end_of_text": "true", "temperature": "0.8", "top_k": "50", "top_p": "0.95",
                 "repetition_penalty": "1.0", "min_p": "0.0", "seed": ""}
DEFAULT_NEW_TOKENS = 64


@dataclass(frozen=True)
class LoadedModel:
    name: str  # the model folder's name, as the page shows it
    model: GPT
    encoding: tiktoken.Encoding


def load(folder: str | Path, device: torch.device | str, quantization: Quantize = "none") -> LoadedModel:
    """A model folder as a model (quantized as `scratchgpt explore --quantize` says) and the
    tokenizer it reads: the one place that knows where the tokenizer comes from."""
    model, encoding = load_model(folder, device)
    return LoadedModel(Path(folder).resolve().name, quantize(model, quantization, "--quantize"), encoding)


@dataclass(frozen=True)
class Request:
    prompt_ids: list[int]
    max_new_tokens: int
    sampling: Sampling
    stop_at: int | None  # the end-of-text id, or None to go on past it
    seed: int | None  # None: a fresh seed, sent back so that the page can repeat the draw


def host_name(host: str) -> str:
    """`host` (a name or an address) as a Host header names it: lower case, IPv6 in brackets."""
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]".lower()
    return host.lower()


def _is_address(name: str) -> bool:
    """Whether a Host header's `name` is an IP address rather than a name that DNS resolves."""
    try:
        ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return True


def flag_name(setting: str) -> str:
    """`top_p` -> `--top-p`: errors name the setting as `scratchgpt generate` spells its flag."""
    return "--" + setting.replace("_", "-")


class Explorer:
    """What the page can ask of the models: check a request, then trace it as a stream of events."""

    def __init__(self, main: LoadedModel, compare: LoadedModel | None = None):
        if compare is not None and compare.encoding.name != main.encoding.name:
            raise ScratchGPTError(
                f"--compare {compare.name} reads tokenizer {compare.encoding.name!r} but {main.name} reads "
                f"{main.encoding.name!r}: the same text would be different tokens"
            )
        self.main, self.compare = main, compare
        self._one_at_a_time = threading.Lock()

    def info(self) -> dict:
        config = self.main.model.config
        return {
            "model": self.main.name,
            "compare": self.compare.name if self.compare else None,
            "context_length": config.context_length,
            "num_blocks": config.num_blocks,
            "num_heads": config.num_heads,
            "attention_scale": ATTENTION_SCALE,  # the attention weights sent are whole numbers of 1/this
            # 64 new tokens, or half the context of a smaller model, leaving room for a prompt
            "defaults": {**PAGE_DEFAULTS, "max_new_tokens": str(min(DEFAULT_NEW_TOKENS, config.context_length // 2))},
        }

    def parse(self, form: object) -> Request:
        """The page's form as a Request, or a ScratchGPTError that says, in one line, what to fix."""
        if not isinstance(form, dict):
            raise ScratchGPTError("the request must be a JSON object of the prompt and the settings")
        prompt = form.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise ScratchGPTError("the prompt is empty: type some text for the model to continue")
        texts = {name: "" if form.get(name) is None else str(form[name]).strip() for name in SETTINGS}
        # No seed is a fresh draw, as in generate; every other setting needs a value.
        missing = [flag_name(name) for name, text in texts.items() if not text and name != "seed"]
        if missing:
            raise ScratchGPTError(f"{', '.join(missing)}: missing; every setting but the seed needs a value")
        settings = {name: parse_flag(SampleParams, name, text, flag_name(name)) for name, text in texts.items() if text}
        prompt_ids = text_to_token_ids(prompt, self.main.encoding)[0].tolist()
        context, length, wanted = self.main.model.config.context_length, len(prompt_ids), settings["max_new_tokens"]
        if length >= context:
            raise ScratchGPTError(
                f"the prompt is {length:,} tokens: {self.main.name}'s context holds {context:,}, "
                "with room needed for at least one new token; shorten the prompt"
            )
        if length + wanted > context:
            raise ScratchGPTError(
                f"the prompt ({length:,} tokens) and --max-new-tokens {wanted:,} need {length + wanted:,} positions "
                f"but {self.main.name}'s context holds {context:,}: ask for at most {context - length:,} new tokens"
            )
        sampling = Sampling.of(settings)
        stop_at = stop_id(self.main.encoding, settings["stop_at_end_of_text"])
        return Request(prompt_ids, wanted, sampling, stop_at, settings.get("seed"))

    def events(self, request: Request) -> Iterator[dict]:
        """start, then one token event per new token, then compare (with --compare) and end."""
        with self._one_at_a_time:
            model = self.main.model
            # A fresh seed is drawn from the range --seed accepts, so the page can offer to repeat it.
            seed = secrets.randbelow(MAX_SEED + 1) if request.seed is None else request.seed
            generator = torch.Generator(model.output_weight.device).manual_seed(seed)
            steps = trace_continuation(model, self.main.encoding, request.prompt_ids, request.max_new_tokens,
                                       request.sampling, generator, request.stop_at)
            prompt = next(steps)
            yield {"type": "start", "seed": seed, "tokens": prompt}
            token_ids = [token["id"] for token in prompt]
            for (token,) in steps:
                token_ids.append(token["id"])
                yield {"type": "token", "token": token}
            if self.compare is not None:
                tokens = score(self.compare.model, self.compare.encoding, token_ids)
                yield {"type": "compare", "model": self.compare.name, "tokens": tokens}
            # The trace ends before max_new_tokens only where the model ended the text.
            new_tokens = len(token_ids) - len(request.prompt_ids)
            yield {"type": "end", "end_of_text": new_tokens < request.max_new_tokens}


class Refusal(Exception):
    """A request answered with `status` and {"error": message}, before any work."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    server: ExploreServer

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (a malformed request line or header, a method with
        no `do_` method here) as one JSON line, like every other answer."""
        if code == HTTPStatus.NOT_IMPLEMENTED and self.command:
            self._route(self.command)  # a method no path takes: refused as a wrong method (405)
        else:
            # With a status line even when the request line was too malformed to name its HTTP
            # version (the standard library would answer as to HTTP/0.9: the body alone).
            self.request_version = self.protocol_version
            self._send_json(HTTPStatus(code), {"error": message or HTTPStatus(code).phrase})

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        try:
            self._check_sender()
            if not self.server.admits(parse_qs(url.query).get("token", [""])[0]):
                raise Refusal(HTTPStatus.FORBIDDEN, "this page needs the token in the address that "
                                                    "`scratchgpt explore` printed: open that address")
            if url.path not in ROUTES:
                raise Refusal(HTTPStatus.NOT_FOUND, f"{url.path}: no such page")
            if ROUTES[url.path] != method:
                raise Refusal(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} {url.path}: not allowed; it takes {ROUTES[url.path]}")
            if url.path == "/":
                self._send(HTTPStatus.OK, "text/html; charset=utf-8", PAGE)
            elif url.path == "/info":
                self._send_json(HTTPStatus.OK, self.server.explorer.info())
            else:
                self._generate()
        except Refusal as e:
            allow = {"Allow": ROUTES[url.path]} if e.status == HTTPStatus.METHOD_NOT_ALLOWED else {}
            self._send_json(e.status, {"error": str(e)}, allow)

    def _check_sender(self) -> None:
        """Refuse a request that another site's page may have sent (see the module's docstring)."""
        host = self.headers.get("Host")
        if not self.server.answers_to(host):
            raise Refusal(HTTPStatus.FORBIDDEN, f"Host {host!r} is not a name of this server: open the address that "
                                                "`scratchgpt explore` printed (or name this one with --host)")
        origin = self.headers.get("Origin")
        # A browser sends the page's own origin as http:// and the Host it asked for.
        if origin is not None and (host is None or origin.strip().lower() != f"http://{host.strip()}".lower()):
            raise Refusal(HTTPStatus.FORBIDDEN, f"Origin {origin[:80]!r} is another site's page: only the page that "
                                                "`scratchgpt explore` serves may use it")

    def _generate(self) -> None:
        content_type = (self.headers.get("Content-Type") or "").strip()
        if not content_type:
            raise Refusal(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "the request has no Content-Type; /generate takes "
                                                             "application/json")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise Refusal(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                          f"Content-Type: {content_type[:40]!r}: /generate takes application/json")
        try:
            request = self.server.explorer.parse(self._read_json())
        except ScratchGPTError as e:
            raise Refusal(HTTPStatus.BAD_REQUEST, str(e)) from e
        self._start(HTTPStatus.OK, "application/x-ndjson")
        events = self.server.explorer.events(request)
        try:
            for event in events:
                self.wfile.write(json.dumps(event).encode() + b"\n")
                self.wfile.flush()  # each token reaches the page as soon as it is chosen
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page went away (reloaded, closed): stop generating for it
        finally:
            events.close()  # releases the models for the next request

    def _read_json(self) -> object:
        """The request's body, read as JSON: a Refusal when its Content-Length is missing, not a
        number of bytes or too large, or when fewer bytes come; a ScratchGPTError when not JSON."""
        text = (self.headers.get("Content-Length") or "").strip()
        if not text:
            raise Refusal(HTTPStatus.LENGTH_REQUIRED, "the request has no Content-Length")
        if not (text.isascii() and text.isdigit()):
            raise Refusal(HTTPStatus.BAD_REQUEST, f"Content-Length: {text[:40]!r} is not a number of bytes")
        length = int(text)
        if length > MAX_REQUEST_BYTES:
            raise Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                          f"the request is {length:,} bytes; at most {MAX_REQUEST_BYTES:,} are read")
        self.connection.settimeout(BODY_TIMEOUT_S)
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            body = b""
        finally:
            self.connection.settimeout(None)  # the answer streams for as long as the model takes
        if len(body) < length:
            raise Refusal(HTTPStatus.BAD_REQUEST, f"the request's body is shorter than its Content-Length, {length:,} bytes")
        try:
            return json.loads(body)
        except ValueError as e:
            raise ScratchGPTError(f"the request is not JSON ({reason(e)})") from e

    def _start(self, status: HTTPStatus, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()  # HTTP/1.0: the body ends when the connection closes, so it can stream

    def _send(self, status: HTTPStatus, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self._start(status, content_type, headers)
        self.wfile.write(body)

    def _send_json(self, status: HTTPStatus, value: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, "application/json", json.dumps(value).encode(), headers)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the terminal shows the address and errors, not a line per request


class ExploreServer(ThreadingHTTPServer):
    """The page's HTTP server for one Explorer; a failure in a request is one line on stderr.

    On a loopback address it admits every request. On any other it makes up a secret token
    (`token`, part of `url`) and admits only requests that carry it: the page then runs the model
    for anyone who can reach this machine and has the address, and for no one else. On either, it
    answers only to its own names (`answers_to`)."""

    def __init__(self, explorer: Explorer, host: str, port: int):
        self.explorer = explorer
        try:
            super().__init__((host, port), _Handler)
        except (OSError, OverflowError) as e:  # in use, not an address of this machine, out of range
            raise ScratchGPTError(f"cannot listen on {host}:{port} ({reason(e)}); choose another --host or --port") from e
        address = ipaddress.ip_address(self.server_address[0])
        self.token = None if address.is_loopback else secrets.token_urlsafe(24)
        # 0.0.0.0 names no one address: other machines reach the page by any of this machine's.
        self.any_address = address.is_unspecified
        self.host_names = LOCAL_NAMES | {host_name(host)} | ({socket.gethostname().lower()} if self.any_address else set())

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/" + (f"?token={self.token}" if self.token else "")

    def admits(self, token: str) -> bool:
        """Whether a request carrying `token` (empty: none) may be served."""
        # Compared in constant time, so that response times do not reveal how much of it was right.
        return self.token is None or secrets.compare_digest(token.encode(), self.token.encode())

    def answers_to(self, host: str | None) -> bool:
        """Whether a request whose Host header is `host` (None: none) asks for this server."""
        if host is None:
            return True  # no browser leaves it out, so no other site's page can send such a request
        match = HOST_HEADER.fullmatch(host.strip())
        if match is None:
            return False
        name = match["name"].lower()
        # A DNS-rebinding page's Host is always its own name, never an address: on 0.0.0.0 any
        # address is one of this machine's, or a route to it.
        return name in self.host_names or (self.any_address and _is_address(name))

    def handle_error(self, request: object, client_address: tuple) -> None:
        error = sys.exc_info()[1]
        print(f"error: a request from the page failed ({type(error).__name__}: {reason(error)})", file=sys.stderr)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def serve(
    model: str, compare: str | None, host: str, port: int, device: torch.device | str, quantization: Quantize = "none"
) -> None:
    """Load the models, say the page's address in one line, serve until Ctrl-C (or SIGTERM)."""
    explorer = Explorer(load(model, device, quantization), load(compare, device, quantization) if compare else None)
    with ExploreServer(explorer, host, port) as server:
        if server.token:
            warn(f"listening on {host}: the page is reachable from other machines and runs the model for anyone "
                 "who has the address below, token included; --host 127.0.0.1 keeps it to this machine")
        print(f"scratchgpt explore: {server.url} (Ctrl-C stops it)", flush=True)
        # Set here rather than inherited: a shell starts background jobs with SIGINT ignored, and
        # Python then never raises KeyboardInterrupt. (SIGTERM already raises one: exit_on_error.)
        previous = signal.signal(signal.SIGINT, _interrupt)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopped", file=sys.stderr)
        finally:
            signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def serving(explorer: Explorer, host: str = "127.0.0.1") -> Iterator[str]:
    """The page for `explorer` on a free port of `host`, served from a background thread, for
    tests and scripts; yields its address (with its token, off loopback)."""
    with ExploreServer(explorer, host, 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.url
        finally:
            server.shutdown()
            thread.join()
