"""The local page of `scratchgpt explore`, served by the standard library's HTTP server.

    GET  /          the page: one HTML file with its script and style inline, system fonts
    GET  /info      the models' names and shapes, and the page's default settings (JSON)
    POST /generate  {"prompt": ..., "temperature": "0.8", ...} -> a stream of JSON lines:
                    start (the seed and the prompt's tokens), token (one per new token),
                    compare (the whole text under --compare's model, if any), end; or a 400
                    with {"error": "one line"} for a bad prompt or setting

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
import json
import secrets
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

import tiktoken
import torch

from scratchgpt.errors import ScratchGPTError, reason
from scratchgpt.explore.trace import ATTENTION_SCALE, score, trace_continuation
from scratchgpt.generate import Sampling, text_to_token_ids
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
# The page's sampling controls, checked like the `sample` keys of the same names (and like
# `scratchgpt generate`'s flags); their defaults are generate's, but for max_new_tokens, which
# must fit in the context beside the prompt (see `Explorer.info`).
SETTINGS = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "min_p", "seed")
PAGE_DEFAULTS = {"temperature": "0.8", "top_k": "50", "top_p": "0.95", "repetition_penalty": "1.0", "min_p": "0.0",
                 "seed": ""}
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
    seed: int | None  # None: a fresh seed, sent back so that the page can repeat the draw


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
        settings = {
            name: parse_flag(SampleParams, name, str(form.get(name, "")).strip(), flag_name(name))
            for name in SETTINGS
            if name != "seed" or str(form.get(name, "")).strip()  # no seed: a fresh draw, as in generate
        }
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
        sampling = Sampling(temperature=settings["temperature"], top_k=settings["top_k"], top_p=settings["top_p"],
                            repetition_penalty=settings["repetition_penalty"], min_p=settings["min_p"])
        return Request(prompt_ids, wanted, sampling, settings.get("seed"))

    def events(self, request: Request) -> Iterator[dict]:
        """start, then one token event per new token, then compare (with --compare) and end."""
        with self._one_at_a_time:
            model = self.main.model
            # A fresh seed is drawn from the range --seed accepts, so the page can offer to repeat it.
            seed = secrets.randbelow(MAX_SEED + 1) if request.seed is None else request.seed
            generator = torch.Generator(model.output_weight.device).manual_seed(seed)
            steps = trace_continuation(
                model, self.main.encoding, request.prompt_ids, request.max_new_tokens, request.sampling, generator
            )
            prompt = next(steps)
            yield {"type": "start", "seed": seed, "tokens": prompt}
            token_ids = [token["id"] for token in prompt]
            for (token,) in steps:
                token_ids.append(token["id"])
                yield {"type": "token", "token": token}
            if self.compare is not None:
                tokens = score(self.compare.model, self.compare.encoding, token_ids)
                yield {"type": "compare", "model": self.compare.name, "tokens": tokens}
            yield {"type": "end"}


class _Handler(BaseHTTPRequestHandler):
    server: ExploreServer

    def do_GET(self) -> None:
        if self.path == "/":
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", PAGE)
        elif self.path == "/info":
            self._send_json(HTTPStatus.OK, self.server.explorer.info())
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"{self.path}: no such page"})

    def do_POST(self) -> None:
        if self.path != "/generate":
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"{self.path}: no such endpoint"})
            return
        try:
            request = self.server.explorer.parse(self._read_json())
        except ScratchGPTError as e:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
            return
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
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            raise ScratchGPTError(f"the request is {length:,} bytes; at most {MAX_REQUEST_BYTES:,} are read")
        try:
            return json.loads(self.rfile.read(length))
        except ValueError as e:
            raise ScratchGPTError(f"the request is not JSON ({reason(e)})") from e

    def _start(self, status: HTTPStatus, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.send_header("Cache-Control", "no-store")
        self.end_headers()  # HTTP/1.0: the body ends when the connection closes, so it can stream

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self._start(status, content_type)
        self.wfile.write(body)

    def _send_json(self, status: HTTPStatus, value: object) -> None:
        self._send(status, "application/json", json.dumps(value).encode())

    def log_message(self, format: str, *args: object) -> None:
        pass  # the terminal shows the address and errors, not a line per request


class ExploreServer(ThreadingHTTPServer):
    """The page's HTTP server for one Explorer; a failure in a request is one line on stderr."""

    def __init__(self, explorer: Explorer, host: str, port: int):
        self.explorer = explorer
        try:
            super().__init__((host, port), _Handler)
        except (OSError, OverflowError) as e:  # in use, not an address of this machine, out of range
            raise ScratchGPTError(f"cannot listen on {host}:{port} ({reason(e)}); choose another --host or --port") from e

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

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
def serving(explorer: Explorer) -> Iterator[str]:
    """The page for `explorer` on a free port of 127.0.0.1, served from a background thread, for
    tests and scripts; yields its address."""
    with ExploreServer(explorer, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.url
        finally:
            server.shutdown()
            thread.join()
