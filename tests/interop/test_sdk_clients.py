"""Unmodified official SDKs (PyPI `openai`, `anthropic`) through the broker's agent proxy.

An agent changes only two things: the SDK's base URL (the broker's `/p/<credential>`) and its API
key (the Latchkey agent token). The capability travels in a default header, or appended to the
token after a `.` for SDKs that cannot add headers. The upstream must see the real credential in
the provider's own header and never the agent token or capability; nothing the SDK hands back
(parsed objects, raw text, headers, stream chunks, errors) may contain the credential, even when
the upstream echoes it.

The broker is the `broker_fixture` example of latchkey-server (a real broker with SQLite, a
workspace created by a fresh admin device, an agent, a shared credential and a standing
capability); the upstream is a recording `http.server` on loopback that answers like the OpenAI
chat completions and Anthropic messages APIs.

Run from the repository root: python -m pytest tests/interop -q
"""

import json
import os
import secrets
import select
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anthropic
import openai
import pytest
from rust_examples import build_command, example_command

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET_ENV = "LATCHKEY_INTEROP_UPSTREAM_SECRET"
FIXTURE = example_command("latchkey-server", "broker_fixture")
REDACTED = "[REDACTED by Latchkey]"
# Fresh per run, shaped like the real keys, and easy to grep for.
OPENAI_CANARY = "sk-proj-LKCANARY" + secrets.token_hex(16)
ANTHROPIC_CANARY = "sk-ant-api03-LKCANARY" + secrets.token_hex(16)
# How long the upstream holds back the rest of a stream, waiting for the client to have read the
# first event; a buffering proxy makes it wait the whole time.
STREAM_HOLD_SECS = 10


# --- the recording upstream ---------------------------------------------------------------------


class Received:
    """One request as the upstream saw it."""

    def __init__(self, method, path, headers, body):
        self.method = method
        self.path = path
        self.headers = headers  # [(lowercase name, value)] in arrival order
        self.body = body

    def header(self, name):
        values = [v for n, v in self.headers if n == name]
        assert len(values) <= 1, f"the upstream got {len(values)} {name} headers"
        return values[0] if values else None

    def everything(self):
        """All header lines and the body as one text, for 'never contains' checks."""
        lines = "\n".join(f"{n}: {v}" for n, v in self.headers)
        return lines + "\n\n" + self.body.decode("utf-8", "replace")


class Upstream:
    """An OpenAI / Anthropic look-alike that records what it receives and echoes the credential
    it was sent back into every answer, so the broker's redaction is exercised."""

    def __init__(self):
        self.received = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.stream_released_by_client = None
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                upstream.handle(self)

            do_GET = do_POST

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def clear(self):
        with self.lock:
            self.received = []
        self.release = threading.Event()
        self.stream_released_by_client = None

    def only(self):
        with self.lock:
            assert len(self.received) == 1, f"expected one upstream request, got {len(self.received)}"
            return self.received[0]

    def count(self):
        with self.lock:
            return len(self.received)

    def handle(self, h):
        body = read_body(h)
        got = Received(h.command, h.path, [(n.lower(), v) for n, v in h.headers.items()], body)
        with self.lock:
            self.received.append(got)
        seen = got.header("authorization") or got.header("x-api-key") or ""
        request = json.loads(body or b"{}")
        if h.path == "/v1/chat/completions":
            if request.get("stream"):
                self.stream(h, openai_stream_events(request["model"], seen))
            else:
                send_json(h, openai_completion(request["model"], seen), seen)
        elif h.path == "/v1/messages":
            if request.get("stream"):
                self.stream(h, anthropic_stream_events(request["model"], seen))
            else:
                send_json(h, anthropic_message(request["model"], seen), seen)
        else:
            send_json(h, {"error": {"message": f"no route {h.path}"}}, seen, status=404)

    def stream(self, h, events):
        """Sends the first event, holds the rest until the client has read it (or the hold times
        out), then sends the rest; events that echo the credential are split mid-secret over two
        writes so redaction must work across chunks. The connection close ends the body."""
        h.send_response(200)
        h.send_header("content-type", "text/event-stream")
        h.send_header("cache-control", "no-cache")
        h.end_headers()
        first, rest = events[0], events[1:]
        h.wfile.write(first)
        h.wfile.flush()
        self.stream_released_by_client = self.release.wait(STREAM_HOLD_SECS)
        for event in rest:
            for part in split_in_secret(event):
                h.wfile.write(part)
                h.wfile.flush()
                time.sleep(0.01)


def read_body(h):
    """The request body, de-chunked (the broker streams bodies upstream)."""
    if "chunked" in (h.headers.get("transfer-encoding") or "").lower():
        body = b""
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return body
            body += h.rfile.read(size)
            h.rfile.readline()
    return h.rfile.read(int(h.headers.get("content-length") or 0))


def send_json(h, value, seen, status=200):
    data = json.dumps(value).encode()
    h.send_response(status)
    h.send_header("content-type", "application/json")
    h.send_header("content-length", str(len(data)))
    h.send_header("x-upstream-saw", seen)
    h.end_headers()
    h.wfile.write(data)


def split_in_secret(event):
    """An event echoing a canary as two pieces cut inside the canary; others whole."""
    for canary in (OPENAI_CANARY, ANTHROPIC_CANARY):
        at = event.find(canary.encode())
        if at >= 0:
            cut = at + len(canary) // 2
            return [event[:cut], event[cut:]]
    return [event]


def sse(data, event=None):
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def openai_completion(model, seen):
    return {
        "id": "chatcmpl-latchkey",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"pong; you sent {seen}", "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
    }


def openai_stream_events(model, seen):
    def chunk(delta, finish=None):
        return sse(
            {
                "id": "chatcmpl-latchkey",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            }
        )

    return [
        chunk({"role": "assistant", "content": "po"}),
        chunk({"content": "ng"}),
        chunk({"content": f"; you sent {seen}"}),
        chunk({}, finish="stop"),
        b"data: [DONE]\n\n",
    ]


def anthropic_message(model, seen):
    return {
        "id": "msg_latchkey",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": f"pong; you sent {seen}"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 4},
    }


def anthropic_stream_events(model, seen):
    def delta(text):
        return sse(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
            "content_block_delta",
        )

    start = anthropic_message(model, seen) | {"content": [], "stop_reason": None}
    start["usage"] = {"input_tokens": 5, "output_tokens": 0}
    return [
        sse({"type": "message_start", "message": start}, "message_start")
        + sse(
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            "content_block_start",
        )
        + delta("po"),
        delta("ng"),
        delta(f"; you sent {seen}"),
        sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 4},
            },
            "message_delta",
        ),
        sse({"type": "message_stop"}, "message_stop"),
    ]


# --- the broker -------------------------------------------------------------------------------


class Broker:
    """A running `broker_fixture`: base URL, agent token, capability, data directory."""

    def __init__(self, upstream, provider, injection, secret):
        self.secret = secret
        self.log = tempfile.TemporaryFile()
        env = dict(os.environ)
        env[SECRET_ENV] = secret
        # Verbose on purpose: the logs are checked for the secret and the token below.
        env["LATCHKEY_LOG"] = "debug"
        args = ["--upstream", upstream.url, "--provider", provider, "--injection", injection]
        self.proc = subprocess.Popen(
            [*FIXTURE, *args, "--secret-env", SECRET_ENV],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 300)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"broker_fixture printed nothing; its log:\n{self.logs()[-4000:]}")
        info = json.loads(line)
        self.base_url = info["base_url"]
        self.origin = self.base_url.split("/p/")[0]
        self.token = info["agent_token"]
        self.capability = info["capability"]
        self.data_dir = Path(info["data_dir"])

    def logs(self):
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def stop(self):
        """Closes stdin (the fixture's stop signal) and checks it left nothing behind."""
        self.proc.stdin.close()
        code = self.proc.wait(timeout=60)
        logs = self.logs()
        assert code == 0, f"broker_fixture exited with {code}:\n{logs[-4000:]}"
        assert self.secret not in logs, "the credential must never appear in the broker's logs"
        assert self.token not in logs, "the agent token must never appear in the broker's logs"
        assert self.capability not in logs, "a capability must never appear in the broker's logs"
        assert not self.data_dir.exists(), "the fixture removes its data directory on exit"


@pytest.fixture(scope="module", autouse=True)
def hermetic_sdks():
    """SDKs read keys, base URLs and proxies from the environment: none of that may leak in."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.upper().endswith("_PROXY") or name.startswith(("OPENAI_", "ANTHROPIC_")):
            del os.environ[name]
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def built():
    """Builds the fixture once, so starting a broker is quick."""
    command = build_command("latchkey-server", "broker_fixture")
    if command is None:
        return
    proc = subprocess.run(
        command,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"building broker_fixture failed:\n{proc.stderr}"


@pytest.fixture(scope="module")
def upstream():
    server = Upstream()
    yield server
    server.server.shutdown()


@pytest.fixture
def fresh(upstream):
    upstream.clear()
    return upstream


@pytest.fixture(scope="module")
def openai_broker(built, upstream):
    broker = Broker(upstream, "openai", "bearer", OPENAI_CANARY)
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def anthropic_broker(built, upstream):
    broker = Broker(upstream, "anthropic", "x-api-key", ANTHROPIC_CANARY)
    yield broker
    broker.stop()


def openai_client(broker, api_key=None, capability_header=True):
    # OpenAI's base URL ends in /v1 (https://api.openai.com/v1), so the agent appends it to the
    # proxy path: the upstream then gets /v1/chat/completions, as the real API expects.
    return openai.OpenAI(
        base_url=broker.base_url + "/v1",
        api_key=api_key or broker.token,
        default_headers={"Latchkey-Capability": broker.capability} if capability_header else None,
        max_retries=0,
    )


def anthropic_client(broker, api_key=None, capability_header=True):
    # Anthropic's base URL is the bare origin (https://api.anthropic.com); paths start with /v1.
    return anthropic.Anthropic(
        base_url=broker.base_url,
        api_key=api_key or broker.token,
        default_headers={"Latchkey-Capability": broker.capability} if capability_header else None,
        max_retries=0,
    )


def assert_upstream_saw_only_the_real_credential(got, broker, header, value):
    assert got.header(header) == value, f"the upstream must get the real credential in {header}"
    everything = got.everything()
    assert broker.token not in everything, "the agent token must never reach the upstream"
    assert broker.capability not in everything, "the capability must never reach the upstream"
    assert got.header("latchkey-capability") is None, "the capability header stays at the broker"


def assert_no_secret(text, broker, what):
    assert broker.secret not in text, f"{what} must not contain the credential"


# --- OpenAI ---------------------------------------------------------------------------------------


def test_openai_chat_completion_reaches_the_upstream_with_the_real_key_and_returns_none_of_it(
    openai_broker, fresh
):
    client = openai_client(openai_broker)
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "ping"}]
    )
    got = fresh.only()
    assert (got.method, got.path) == ("POST", "/v1/chat/completions"), "the real API's path"
    assert json.loads(got.body)["messages"] == [{"role": "user", "content": "ping"}], "body as sent"
    assert got.header("x-stainless-lang") == "python", "the SDK's own headers pass through"
    assert_upstream_saw_only_the_real_credential(
        got, openai_broker, "authorization", f"Bearer {OPENAI_CANARY}"
    )
    assert completion.model == "gpt-4o-mini", "the SDK parsed the upstream's answer"
    assert completion.choices[0].message.content == f"pong; you sent Bearer {REDACTED}", (
        "the upstream's echo of the key is replaced before the agent sees it"
    )
    assert_no_secret(repr(completion), openai_broker, "the parsed response")
    assert_no_secret(completion.model_dump_json(), openai_broker, "the response as JSON")


def test_openai_raw_response_text_and_headers_carry_no_credential(openai_broker, fresh):
    client = openai_client(openai_broker)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "ping"}]
    )
    assert raw.status_code == 200
    assert raw.headers["x-upstream-saw"] == REDACTED, "an echoing response header is replaced"
    assert_no_secret(raw.text, openai_broker, "the raw response body")
    assert_no_secret(repr(dict(raw.headers)), openai_broker, "the response headers")
    assert raw.parse().choices[0].finish_reason == "stop", "the raw response still parses"


def test_openai_streaming_passes_through_event_by_event(openai_broker, fresh):
    client = openai_client(openai_broker)
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "ping"}], stream=True
    )
    pieces, chunks = [], []
    for chunk in stream:
        chunks.append(repr(chunk))
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
            fresh.release.set()  # tells the upstream the first event arrived
    assert fresh.stream_released_by_client, (
        "the first event must reach the SDK while the upstream is still holding the rest: "
        "the broker must stream, not buffer"
    )
    assert "".join(pieces) == f"pong; you sent Bearer {REDACTED}", (
        "every chunk arrives; an echo split across chunks is still replaced"
    )
    assert json.loads(fresh.only().body)["stream"] is True
    assert_upstream_saw_only_the_real_credential(
        fresh.only(), openai_broker, "authorization", f"Bearer {OPENAI_CANARY}"
    )
    assert_no_secret("\n".join(chunks), openai_broker, "the stream")


def test_a_capability_appended_to_the_key_works_for_sdks_without_header_support(
    openai_broker, fresh
):
    client = openai_client(
        openai_broker,
        api_key=f"{openai_broker.token}.{openai_broker.capability}",
        capability_header=False,
    )
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "ping"}]
    )
    assert completion.choices[0].message.content.startswith("pong"), "the call went through"
    assert_upstream_saw_only_the_real_credential(
        fresh.only(), openai_broker, "authorization", f"Bearer {OPENAI_CANARY}"
    )


def test_without_a_capability_the_sdk_raises_a_status_error_and_the_upstream_is_not_called(
    openai_broker, fresh
):
    client = openai_client(openai_broker, capability_header=False)
    with pytest.raises(openai.APIStatusError) as refused:
        # `Prefer: wait=0`: refuse at once instead of holding the call for a member's approval.
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "ping"}],
            extra_headers={"Prefer": "wait=0"},
        )
    assert refused.value.status_code == 428, "a call without a capability needs an approval"
    assert refused.value.body["code"] == "approval_required", "the broker's code reaches the agent"
    assert fresh.count() == 0, "a refused call must never reach the upstream"


def test_a_key_that_is_not_an_agent_token_is_an_authentication_error(openai_broker, fresh):
    client = openai_client(openai_broker, api_key="sk-proj-not-a-latchkey-token")
    with pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "ping"}]
        )
    assert refused.value.body["code"] == "unknown_token", "the SDK maps the broker's 401"
    assert fresh.count() == 0, "a refused call must never reach the upstream"


def test_the_brokers_storage_never_holds_the_credential_in_plaintext(openai_broker, fresh):
    openai_client(openai_broker).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "ping"}]
    )
    files = [p for p in openai_broker.data_dir.rglob("*") if p.is_file()]
    assert files, "the broker keeps its database in the data directory"
    for path in files:
        data = path.read_bytes()
        assert OPENAI_CANARY.encode() not in data, f"{path.name} holds the credential in plaintext"
        assert openai_broker.token.encode() not in data, f"{path.name} holds the agent token"


# --- Anthropic ------------------------------------------------------------------------------------


def test_anthropic_messages_reach_the_upstream_with_the_real_key_in_x_api_key(
    anthropic_broker, fresh
):
    client = anthropic_client(anthropic_broker)
    message = client.messages.create(
        model="claude-latchkey-test", max_tokens=16, messages=[{"role": "user", "content": "ping"}]
    )
    got = fresh.only()
    assert (got.method, got.path) == ("POST", "/v1/messages"), "the real API's path"
    assert got.header("anthropic-version"), "the SDK's version header passes through"
    assert_upstream_saw_only_the_real_credential(got, anthropic_broker, "x-api-key", ANTHROPIC_CANARY)
    assert got.header("authorization") is None, (
        "whichever header the SDK put its key in is removed; only the injected one is sent"
    )
    assert message.content[0].text == f"pong; you sent {REDACTED}", "parsed, echo replaced"
    assert_no_secret(repr(message), anthropic_broker, "the parsed message")
    raw = client.messages.with_raw_response.create(
        model="claude-latchkey-test", max_tokens=16, messages=[{"role": "user", "content": "ping"}]
    )
    assert_no_secret(raw.http_response.text, anthropic_broker, "the raw response body")
    assert_no_secret(repr(dict(raw.headers)), anthropic_broker, "the response headers")


def test_anthropic_streaming_passes_through_event_by_event(anthropic_broker, fresh):
    client = anthropic_client(anthropic_broker)
    stream = client.messages.create(
        model="claude-latchkey-test",
        max_tokens=16,
        messages=[{"role": "user", "content": "ping"}],
        stream=True,
    )
    kinds, pieces = [], []
    for event in stream:
        kinds.append(event.type)
        if event.type == "content_block_delta":
            pieces.append(event.delta.text)
            fresh.release.set()
        assert_no_secret(repr(event), anthropic_broker, "a stream event")
    assert fresh.stream_released_by_client, "the broker must stream, not buffer"
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop", f"every event: {kinds}"
    assert "".join(pieces) == f"pong; you sent {REDACTED}", "split echo replaced"
    assert_upstream_saw_only_the_real_credential(
        fresh.only(), anthropic_broker, "x-api-key", ANTHROPIC_CANARY
    )


def test_anthropic_with_the_capability_appended_to_the_key(anthropic_broker, fresh):
    client = anthropic_client(
        anthropic_broker,
        api_key=f"{anthropic_broker.token}.{anthropic_broker.capability}",
        capability_header=False,
    )
    message = client.messages.create(
        model="claude-latchkey-test", max_tokens=16, messages=[{"role": "user", "content": "ping"}]
    )
    assert message.stop_reason == "end_turn", "the call went through"
    assert_upstream_saw_only_the_real_credential(
        fresh.only(), anthropic_broker, "x-api-key", ANTHROPIC_CANARY
    )
