"""`scratchgpt explore`'s server: the JSON it streams, the page it serves (offline), and every
mistake as one line, on the page or at start-up."""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import ending_the_text
from scratchgpt.cli import build_parser, main
from scratchgpt.explore.server import BODY_TIMEOUT_S, Explorer, LoadedModel, load, serving

SETTINGS = {"temperature": "0.8", "top_k": "50", "top_p": "0.95", "repetition_penalty": "1.0", "min_p": "0.0",
            "max_new_tokens": "6", "stop_at_end_of_text": "true"}


@pytest.fixture(scope="module")
def explorer(explore_models):
    return Explorer(load(explore_models["finetuned"], "cpu"), load(explore_models["pretrained"], "cpu"))


@pytest.fixture(scope="module")
def url(explorer):
    with serving(explorer) as address:
        yield address


def get(address: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(address) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def post(address: str, body: bytes) -> tuple[int, bytes]:
    return post_to(address + "generate", body)


def post_to(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def generate(address: str, **form: str) -> list[dict]:
    status, body = post(address, json.dumps({"prompt": "Lights go out", **SETTINGS, **form}).encode())
    assert status == 200, body
    return [json.loads(line) for line in body.decode().splitlines()]


def test_the_page_is_self_contained_and_may_reach_nothing_else(url):
    status, headers, page = get(url)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert not re.search(rb"(src|href)\s*=|@import|url\(|https?://", page)  # nothing fetched, inline only
    assert "default-src 'none'" in headers["Content-Security-Policy"]  # and the browser enforces it


def test_info_names_the_models_and_gives_generates_defaults(url):
    status, _, body = get(url + "info")
    info = json.loads(body)
    assert status == 200 and info["model"] == "finetuned" and info["compare"] == "pretrained"
    assert (info["num_blocks"], info["num_heads"], info["context_length"], info["attention_scale"]) == (2, 2, 64, 10_000)
    generate_defaults = vars(build_parser().parse_args(["generate", "a prompt"]))
    assert info["defaults"] == {
        # generate's
        **{name: generate_defaults[name]
           for name in ("temperature", "top_k", "top_p", "repetition_penalty", "min_p", "stop_at_end_of_text")},
        "seed": "",  # none: a fresh draw each time, as in generate
        "max_new_tokens": "32",  # half of this tiny context, leaving room for a prompt
    }


def test_generate_streams_start_tokens_compare_end(url):
    events = generate(url, seed="5")
    assert [e["type"] for e in events] == ["start"] + ["token"] * 6 + ["compare", "end"]
    start, *steps, compare, _ = events
    assert start["seed"] == 5
    tokens = start["tokens"] + [e["token"] for e in steps]
    assert "".join(t["text"] for t in start["tokens"]) == "Lights go out"
    for position, token in enumerate(tokens):
        assert set(token) == {"id", "text", "probability", "rank", "candidates", "attention"}
        assert [len(head) for block in token["attention"] for head in block] == [position + 1] * 4  # 2 blocks x 2 heads
        # weights in ten-thousandths, each row summing to 1 but for rounding
        assert all(abs(sum(head) - 10_000) <= len(head) for block in token["attention"] for head in block)
        if position:
            assert len(token["candidates"]) == 10 and 0 < token["probability"] <= token["candidates"][0]["probability"]
            if token["rank"] <= 10:  # the taken token is among the candidates, with the same probability
                assert token["candidates"][token["rank"] - 1]["id"] == token["id"]
    assert compare["model"] == "pretrained" and [t["id"] for t in compare["tokens"]] == [t["id"] for t in tokens]
    assert compare["tokens"][3]["probability"] != tokens[3]["probability"]  # another model, other beliefs
    assert generate(url, seed="5") == events  # a seed repeats the draw


def test_the_sampling_settings_reach_the_sampler(url):
    """min-p 1 keeps only the likeliest token: greedy, whatever the temperature; a huge repetition
    penalty then never takes a token of the text again."""
    greedy = generate(url, temperature="0", seed="1")
    assert generate(url, temperature="5", min_p="1", seed="2") == [{**greedy[0], "seed": 2}, *greedy[1:]]
    events = generate(url, temperature="0", repetition_penalty="1e9", max_new_tokens="20")
    ids = [t["id"] for t in events[0]["tokens"]] + [e["token"]["id"] for e in events if e["type"] == "token"]
    assert len(set(ids)) == len(ids)


def test_quantized_models_stream_the_same_events(explore_models):
    explorer = Explorer(load(explore_models["finetuned"], "cpu", "int8"), load(explore_models["pretrained"], "cpu", "int8"))
    with serving(explorer) as address:
        events = generate(address, seed="5")
    assert [e["type"] for e in events] == ["start"] + ["token"] * 6 + ["compare", "end"]


@pytest.fixture(scope="module")
def ending(explore_models) -> tuple[Explorer, list[int]]:
    """An explorer whose model, greedy, ends the text "Lights go out" after a few new tokens; those tokens."""
    loaded = load(explore_models["finetuned"], "cpu")
    model, before_the_end = ending_the_text(loaded.model, loaded.encoding.encode("Lights go out"), loaded.encoding.eot_token)
    return Explorer(LoadedModel("ending", model, loaded.encoding)), before_the_end


def test_the_stream_ends_cleanly_where_the_model_ends_the_text(ending):
    explorer, before_the_end = ending
    end_of_text = explorer.main.encoding.eot_token
    with serving(explorer) as address:
        events = generate(address, temperature="0", max_new_tokens="20")
        assert [e["type"] for e in events] == ["start"] + ["token"] * len(before_the_end) + ["end"]
        assert [e["token"]["id"] for e in events[1:-1]] == before_the_end  # the end itself is not a token
        assert events[-1] == {"type": "end", "end_of_text": True}
        went_on = generate(address, temperature="0", max_new_tokens="20", stop_at_end_of_text="false")
    new = [e["token"] for e in went_on if e["type"] == "token"]
    assert [t["id"] for t in new[:len(before_the_end) + 1]] == [*before_the_end, end_of_text] and len(new) == 20
    assert new[len(before_the_end)]["text"] == "<|endoftext|>" and went_on[-1] == {"type": "end", "end_of_text": False}


def test_a_one_token_prompt_has_nothing_that_predicted_it(url):
    start, first, *_ = generate(url, prompt="Hello", max_new_tokens="2", seed="1")
    assert [t["probability"] for t in start["tokens"]] == [None] and first["token"]["probability"] > 0


def test_without_a_seed_each_draw_differs_and_says_its_seed(url):
    first, second = generate(url, seed="")[0], generate(url)[0]
    assert first["seed"] != second["seed"]
    again = generate(url, seed=str(first["seed"]))
    assert again[0]["seed"] == first["seed"]


@pytest.mark.parametrize(
    "form, message",
    [
        ({"top_p": "1.5"}, "--top-p = 1.5: must be in (0, 1]"),  # what `scratchgpt generate --top-p 1.5` says
        ({"temperature": "-1"}, "--temperature = -1: must be >= 0"),
        ({"top_k": "2.5"}, "--top-k = 2.5: must be a whole number"),
        ({"max_new_tokens": "0"}, "--max-new-tokens = 0: must be from 1 to 4,096"),
        ({"seed": "-3"}, "--seed = -3: must be from 0 to"),
        ({"repetition_penalty": "-1"}, "--repetition-penalty = -1: must be > 0"),
        ({"min_p": "2"}, "--min-p = 2: must be in [0, 1]"),
        ({"stop_at_end_of_text": "maybe"}, "--stop-at-end-of-text = 'maybe': must be true or false"),
        ({"prompt": ""}, "the prompt is empty"),
        ({"prompt": " word" * 64}, "the prompt is 64 tokens: finetuned's context holds 64"),
        ({"max_new_tokens": "62"}, "the prompt (4 tokens) and --max-new-tokens 62 need 66 positions"),
    ],
)
def test_a_bad_prompt_or_setting_is_one_line_for_the_page(url, form, message):
    status, body = post(url, json.dumps({"prompt": "Lights go out", **SETTINGS, **form}).encode())
    assert status == 400
    error = json.loads(body)["error"]
    assert message in error and "\n" not in error


def test_a_missing_setting_is_named(url):
    form = {"prompt": "Lights go out", **SETTINGS}
    del form["temperature"]
    for body in (form, {**form, "top_k": None}):
        status, answer = post(url, json.dumps(body).encode())
        assert status == 400
        assert json.loads(answer)["error"].startswith("--temperature")
    assert json.loads(answer)["error"] == "--temperature, --top-k: missing; every setting but the seed needs a value"


def raw_request(address: str, request: bytes) -> tuple[int, bytes, float]:
    """Send `request` as it is over a socket, keeping the socket open for writing; the answer's
    status, body and how many seconds it took to come whole."""
    parts = urllib.parse.urlsplit(address)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
        started = time.monotonic()
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(1 << 16):
            answer += chunk
        seconds = time.monotonic() - started
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body, seconds


GOOD_BODY = json.dumps({"prompt": "Lights go out", **SETTINGS}).encode()
# The page's own requests send their body as JSON.
POST_GENERATE = b"POST /generate HTTP/1.1\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize(
    "request_bytes, status, message",
    [
        (POST_GENERATE + b"Content-Length: abc\r\n\r\n", 400, "Content-Length: 'abc' is not a number"),
        (POST_GENERATE + b"Content-Length: -1\r\n\r\n", 400, "Content-Length: '-1' is not a number"),
        (POST_GENERATE + b"\r\n", 411, "the request has no Content-Length"),
        (POST_GENERATE + b"Content-Length: 100\r\n\r\n{", 400, "shorter than its Content-Length, 100 bytes"),
        (POST_GENERATE + b"Content-Length: 999999999\r\n\r\n", 413, "at most 1,048,576 are read"),
        (b"GET /generate HTTP/1.1\r\n\r\n", 405, "GET /generate: not allowed; it takes POST"),
        (b"PUT / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 405, "PUT /: not allowed; it takes GET"),
        (b"DELETE /nowhere HTTP/1.1\r\n\r\n", 404, "/nowhere: no such page"),
        (b"NONSENSE\r\n\r\n", 400, "Bad request"),
    ],
    ids=["length-abc", "length-negative", "no-length", "short-body", "huge-length", "get-generate", "put", "delete",
         "no-request-line"],
)
def test_a_malformed_request_gets_a_prompt_4xx_and_the_server_stays_up(url, request_bytes, status, message):
    answer_status, body, seconds = raw_request(url, request_bytes)
    assert answer_status == status and body.count(b"\n") == 0, body
    assert message in json.loads(body)["error"]
    # Promptly: a body shorter than announced is waited for BODY_TIMEOUT_S, every other at once.
    assert seconds < (BODY_TIMEOUT_S if b"{" in request_bytes and b"POST" in request_bytes else 0) + 1.0
    assert raw_request(url, POST_GENERATE + b"Content-Length: %d\r\n\r\n%s" % (len(GOOD_BODY), GOOD_BODY))[0] == 200


def test_off_loopback_every_request_needs_the_token(explorer):
    with serving(explorer, "0.0.0.0") as address:
        parts = urllib.parse.urlsplit(address)
        token = urllib.parse.parse_qs(parts.query)["token"][0]
        assert len(token) >= 32
        base = f"http://127.0.0.1:{parts.port}/"
        for query in ("", "?token=", "?token=" + token[:-1] + ("y" if token.endswith("x") else "x"), "?token=" + token + "x", "?token=\u00e9"):
            for path in ("", "info", "nowhere"):
                status, _, body = get(base + path + urllib.parse.quote(query, safe="?="))
                assert status == 403 and "needs the token in the address" in json.loads(body)["error"], (path, query)
            assert post_to(base + "generate" + urllib.parse.quote(query, safe="?="), GOOD_BODY)[0] == 403, query
        assert get(address)[0] == 200  # the page, at the printed address
        assert get(base + "info?token=" + token)[0] == 200
        status, body = post_to(base + "generate?token=" + token, GOOD_BODY)
        assert status == 200 and json.loads(body.splitlines()[-1])["type"] == "end"


def ask(address: str, method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> tuple[int, bytes]:
    """One request to the server at `address` with `headers` as given (a Host among them replaces
    http.client's own); the answer's status and body."""
    parts = urllib.parse.urlsplit(address)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def refusal(status: int, body: bytes) -> tuple[int, str]:
    """A refusal's status and its one line of error."""
    assert body.count(b"\n") == 0, body
    return status, json.loads(body)["error"]


def still_generates(address: str, query: str = "") -> bool:
    status, body = ask(address, "POST", "/generate" + query, {"Content-Type": "application/json"}, GOOD_BODY)
    return status == 200 and json.loads(body.splitlines()[-1])["type"] == "end"  # a fresh draw may end the text


def test_only_its_own_names_are_answered_so_a_dns_rebinding_page_reads_nothing(url):
    port = urllib.parse.urlsplit(url).port
    for host in ("evil.example", f"evil.example:{port}", f"localhost.evil.example:{port}", f"127.0.0.1.nip.io:{port}",
                 f"127.0.0.1:{port}@evil.example", "evil@localhost", f"[::2]:{port}", f"localhost:{port}:{port}", ""):
        status, error = refusal(*ask(url, "GET", "/info", {"Host": host}))
        assert status == 403 and error.startswith(f"Host {host!r} is not a name of this server: open the address"), host
        status, error = refusal(*ask(url, "POST", "/generate", {"Host": host, "Content-Type": "application/json"}, GOOD_BODY))
        assert status == 403 and error.startswith(f"Host {host!r}"), host
        assert ask(url, "GET", "/", {"Host": host})[0] == 403, host  # not even the page
        assert still_generates(url), host
    # With or without the port, which an SSH tunnel may change; in any case, as browsers may.
    for host in ("localhost", f"localhost:{port}", f"LocalHost:{port}", "localhost:9000", "127.0.0.1", f"127.0.0.1:{port}",
                 "[::1]", f"[::1]:{port}"):
        status, body = ask(url, "GET", "/info", {"Host": host})
        assert status == 200 and json.loads(body)["model"] == "finetuned", host


@pytest.mark.parametrize(
    "origin, content_type, status, message",
    [
        # another site's page: a "simple" POST, which browsers send without a preflight
        ("http://evil.example", "text/plain", 403, "Origin 'http://evil.example' is another site's page"),
        ("http://evil.example", "application/json", 403, "Origin 'http://evil.example' is another site's page"),
        ("null", "text/plain;charset=UTF-8", 403, "Origin 'null' is another site's page"),  # a sandboxed page or a file
        ("http://localhost:{port}", "application/json", 403, "Origin 'http://localhost:{port}' is another"),  # a name
        ("https://127.0.0.1:{port}", "application/json", 403, "Origin 'https://127.0.0.1:{port}' is another"),
        ("http://127.0.0.1:{port}.evil.example", "application/json", 403, "is another site's page"),
        # the page's own origin, but a body that is not JSON
        ("http://127.0.0.1:{port}", "text/plain", 415, "Content-Type: 'text/plain': /generate takes application/json"),
        ("http://127.0.0.1:{port}", "application/x-www-form-urlencoded", 415, "/generate takes application/json"),
        ("http://127.0.0.1:{port}", "multipart/form-data; boundary=x", 415, "/generate takes application/json"),
        (None, "text/plain", 415, "Content-Type: 'text/plain': /generate takes application/json"),
        (None, None, 415, "the request has no Content-Type; /generate takes application/json"),
    ],
    ids=["evil-text", "evil-json", "null-origin", "other-name", "https", "suffix", "own-text", "own-form", "own-multipart",
         "no-origin-text", "no-type"],
)
def test_a_post_that_another_sites_page_could_send_runs_nothing(url, origin, content_type, status, message):
    port = urllib.parse.urlsplit(url).port
    headers = {"Host": f"127.0.0.1:{port}"}
    if origin:
        headers["Origin"] = origin.format(port=port)
    if content_type:
        headers["Content-Type"] = content_type
    answer_status, error = refusal(*ask(url, "POST", "/generate", headers, GOOD_BODY))
    assert answer_status == status and message.format(port=port) in error
    assert still_generates(url)


def test_the_pages_own_origin_and_clients_without_one_are_served(url):
    port = urllib.parse.urlsplit(url).port
    for headers in ({"Origin": f"http://127.0.0.1:{port}", "Content-Type": "application/json"},
                    {"Origin": f"http://localhost:{port}", "Host": f"localhost:{port}", "Content-Type": "application/json"},
                    {"Content-Type": "application/json; charset=utf-8"}):  # curl, scripts: no Origin
        status, body = ask(url, "POST", "/generate", headers, GOOD_BODY)
        assert status == 200 and json.loads(body.splitlines()[-1])["type"] == "end", headers
    assert ask(url, "GET", "/info", {"Origin": "http://evil.example"})[0] == 403  # nor may it read


def test_a_host_named_with_host_is_answered_too(explorer):
    with serving(explorer, "127.0.0.2") as address:  # loopback: no token
        port = urllib.parse.urlsplit(address).port
        for host, status in ((f"127.0.0.2:{port}", 200), (f"localhost:{port}", 200), (f"127.0.0.3:{port}", 403),
                             ("evil.example", 403)):
            assert ask(address, "GET", "/info", {"Host": host})[0] == status, host


def test_off_loopback_the_same_checks_apply_beside_the_token(explorer):
    with serving(explorer, "0.0.0.0") as address:
        parts = urllib.parse.urlsplit(address)
        base, query = f"http://127.0.0.1:{parts.port}/", "/info?" + parts.query
        # 0.0.0.0 names no one address: other machines use any of this machine's, or its name.
        for host in (f"0.0.0.0:{parts.port}", f"192.0.2.7:{parts.port}", f"[2001:db8::7]:{parts.port}",
                     f"{socket.gethostname()}:{parts.port}", f"localhost:{parts.port}"):
            assert ask(base, "GET", query, {"Host": host})[0] == 200, host
        status, error = refusal(*ask(base, "GET", query, {"Host": f"evil.example:{parts.port}"}))
        assert status == 403 and error.startswith("Host 'evil.example")  # the token alone would not stop it
        headers = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
        status, error = refusal(*ask(base, "POST", "/generate?" + parts.query, headers, GOOD_BODY))
        assert status == 403 and error.startswith("Origin 'http://evil.example'")
        status, _ = ask(base, "POST", "/generate?" + parts.query, {"Content-Type": "text/plain"}, GOOD_BODY)
        assert status == 415 and still_generates(base, "?" + parts.query)


def test_a_request_that_is_not_json_or_not_a_page(url):
    status, body = post(url, b"{prompt")
    assert status == 400 and json.loads(body)["error"].startswith("the request is not JSON")
    status, _, body = get(url + "etc/passwd")
    assert status == 404 and "no such page" in json.loads(body)["error"]  # serves no file


def run_cli(capsys, *args: str) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as exit_:
        main(["explore", *args])
    return exit_.value.code, capsys.readouterr().err.strip().splitlines()


def test_a_missing_or_damaged_model_folder_is_one_line(explore_models, tmp_path, capsys):
    code, lines = run_cli(capsys, "--model", str(tmp_path / "nowhere"))
    assert code == 1 and lines == [f"error: {tmp_path / 'nowhere'}: not found; a model folder holds config.json and model.safetensors"]
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.json").write_text((explore_models["finetuned"] / "config.json").read_text())
    (damaged / "model.safetensors").write_bytes(b"\0" * 100)
    code, lines = run_cli(capsys, "--model", str(damaged), "--compare", str(explore_models["pretrained"]))
    assert code == 1 and len(lines) == 1 and "corrupted or not a safetensors file" in lines[0]


def test_a_bad_quantize_flag_is_one_line(explore_models, capsys):
    code, lines = run_cli(capsys, "--model", str(explore_models["finetuned"]), "--quantize", "int4")
    assert code == 1 and lines == ["error: --quantize = 'int4': must be one of none, int8"]


def test_a_port_in_use_is_one_line(explore_models, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, lines = run_cli(capsys, "--model", str(explore_models["finetuned"]), "--port", str(port))
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith(f"error: cannot listen on 127.0.0.1:{port} (") and "choose another --host or --port" in lines[0]


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_it_says_its_address_in_one_line_and_stops_cleanly_on_ctrl_c(explore_models, how):
    server = subprocess.Popen(
        [sys.executable, "-c", "from scratchgpt.cli import main; main()", "explore",
         "--model", str(explore_models["finetuned"]), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # As a shell starts a background job: SIGINT ignored, which the server must not inherit.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        line = server.stdout.readline()
        address = re.fullmatch(r"scratchgpt explore: (http://127\.0\.0\.1:\d+/) \(Ctrl-C stops it\)\n", line)
        assert address, line
        assert get(address[1] + "info")[0] == 200
        server.send_signal(how)
        stdout, stderr = server.communicate(timeout=30)
    finally:
        server.kill()
    assert server.returncode == 0 and stdout == "" and stderr == "stopped\n"


def test_off_loopback_it_warns_in_one_line_and_prints_the_address_with_its_token(explore_models):
    server = subprocess.Popen(
        [sys.executable, "-c", "from scratchgpt.cli import main; main()", "explore",
         "--model", str(explore_models["finetuned"]), "--host", "0.0.0.0", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = server.stdout.readline()
        address = re.fullmatch(r"scratchgpt explore: http://0\.0\.0\.0:(\d+)/\?token=([\w-]+) \(Ctrl-C stops it\)\n", line)
        assert address, line
        assert server.stderr.readline() == (
            "warning: listening on 0.0.0.0: the page is reachable from other machines and runs the model for "
            "anyone who has the address below, token included; --host 127.0.0.1 keeps it to this machine\n")
        port, token = address.groups()
        assert get(f"http://127.0.0.1:{port}/info")[0] == 403
        assert get(f"http://127.0.0.1:{port}/info?token={token}")[0] == 200
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=30)
    finally:
        server.kill()
    assert server.returncode == 0 and stderr == "stopped\n"
