"""Latchkey device request signatures (RFC 9421 + RFC 9530) against an independent implementation.

The Rust side is the `httpsig_vector` example of latchkey-core: `sign` prints a request signed by a
fixed test device key; `verify` reads a request as JSON on stdin and prints Latchkey's verdict.
The Python side is PyPI `http-message-signatures` 3.x with its own Ed25519 and Content-Digest code.

Run from the repository root: python -m pytest tests/interop -q
"""

import base64
import datetime
import json
import secrets
import subprocess
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from http_message_signatures import (
    ContentDigest,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    InvalidSignature,
    MappingKeyResolver,
    algorithms,
)
from rust_examples import example_command

REPO_ROOT = Path(__file__).resolve().parents[2]
# Latchkey's profile: what its verifier requires, mirrored on the Python side.
LABEL = "lk"
TAG = "latchkey"
REQUIRED = ("@method", "@target-uri", "content-digest")


class Request:
    """The message shape http-message-signatures reads: method, absolute URL, header items."""

    def __init__(self, method, url, headers):
        self.method = method
        self.url = url
        self.headers = headers


class FieldLines:
    """Header field lines in order, repeated names allowed (what the library's items() expects)."""

    def __init__(self, pairs):
        self.pairs = [(name, value) for name, value in pairs]

    def items(self):
        return list(self.pairs)

    def __iter__(self):
        return iter(dict.fromkeys(name for name, _ in self.pairs))

    def __contains__(self, name):
        return any(n.lower() == name.lower() for n, _ in self.pairs)

    def __setitem__(self, name, value):
        del self[name]
        self.pairs.append((name, value))

    def __delitem__(self, name):
        self.pairs = [(n, v) for n, v in self.pairs if n.lower() != name.lower()]


def run_vector(*args, stdin=None):
    """Runs the Rust example from the repository root and returns (exit code, parsed JSON)."""
    proc = subprocess.run(
        [*example_command("latchkey-core", "httpsig_vector"), *args],
        cwd=REPO_ROOT,
        input=None if stdin is None else json.dumps(stdin),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.stdout.strip(), f"httpsig_vector printed nothing; stderr:\n{proc.stderr}"
    return proc.returncode, json.loads(proc.stdout)


@pytest.fixture(scope="module")
def latchkey_signed():
    code, vector = run_vector("sign")
    assert code == 0, vector
    return vector


def python_verifier(public_key_hex, key_id):
    public_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
    verifier = HTTPMessageVerifier(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={key_id: public_key}, private_keys={}),
    )
    verifier.max_clock_skew = datetime.timedelta(seconds=30)
    return verifier


def test_python_verifies_a_request_signed_by_latchkey(latchkey_signed):
    v = latchkey_signed
    request = Request(v["method"], v["url"], FieldLines(v["headers"]))
    results = python_verifier(v["public_key_hex"], v["key_id"]).verify(
        request,
        max_age=datetime.timedelta(seconds=300),
        expect_tag=TAG,
        expect_label=LABEL,
        require_components=REQUIRED,
        body=v["body"].encode(),
    )
    assert len(results) == 1, "exactly the lk signature is selected"
    result = results[0]
    assert result.parameters["keyid"] == v["key_id"], "keyid is the device id"
    assert result.parameters["alg"] == "ed25519"
    assert result.parameters["expires"] - result.parameters["created"] <= 300, "window within profile"
    assert 16 <= len(result.nonce) <= 64, "the nonce is within the profile's bounds"
    assert result.body == v["body"].encode(), "the library checked Content-Digest against the body"


def test_python_computes_the_same_content_digest_as_latchkey(latchkey_signed):
    v = latchkey_signed
    digest = dict((n.lower(), val) for n, val in v["headers"])["content-digest"]
    assert digest == ContentDigest.create(v["body"].encode()), "RFC 9530 sha-256 digests agree"


def test_python_rejects_a_latchkey_request_with_a_changed_body(latchkey_signed):
    v = latchkey_signed
    request = Request(v["method"], v["url"], FieldLines(v["headers"]))
    with pytest.raises(InvalidSignature):
        python_verifier(v["public_key_hex"], v["key_id"]).verify(
            request, expect_tag=TAG, expect_label=LABEL, body=b'{"hello": "there"}'
        )


def test_python_rejects_a_latchkey_request_sent_to_another_url(latchkey_signed):
    v = latchkey_signed
    request = Request(v["method"], v["url"].replace("demo", "other"), FieldLines(v["headers"]))
    with pytest.raises(InvalidSignature):
        python_verifier(v["public_key_hex"], v["key_id"]).verify(
            request, expect_tag=TAG, expect_label=LABEL, body=v["body"].encode()
        )


def python_signed_request(body=b'{"name": "github"}', covered=REQUIRED + ("content-type",)):
    """A request signed by the Python library in Latchkey's profile, as the verify-mode JSON."""
    private_key = Ed25519PrivateKey.generate()
    key_id = str(uuid.uuid4())
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    headers = FieldLines([("Content-Type", "application/json")])
    request = Request("POST", "https://broker.example/v1/credentials?workspace=demo", headers)
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={key_id: private_key}),
    )
    signer.sign(
        request,
        key_id=key_id,
        created=now,
        expires=now + datetime.timedelta(seconds=60),
        nonce=base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode(),
        label=LABEL,
        tag=TAG,
        covered_component_ids=covered,
        body=body,
    )
    public_hex = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    return {
        "method": request.method,
        "url": request.url,
        "headers": [[n, v] for n, v in headers.items()],
        "body": body.decode(),
        "public_key_hex": public_hex,
    }, key_id


def test_latchkey_verifies_a_request_signed_by_python_in_the_latchkey_profile():
    request, key_id = python_signed_request()
    code, verdict = run_vector("verify", stdin=request)
    assert code == 0 and verdict["ok"], f"Latchkey must accept it: {verdict} for {request}"
    assert verdict["key_id"] == key_id, "the key id Latchkey reports is the one Python signed"
    assert verdict["covered"] == ["@method", "@target-uri", "content-digest", "content-type"]


def test_latchkey_rejects_a_python_signed_request_whose_body_changed():
    request, _ = python_signed_request()
    request["body"] = '{"name": "gitlab"}'
    code, verdict = run_vector("verify", stdin=request)
    assert code == 1 and verdict == {"ok": False, "error": "content digest mismatch"}, verdict


def test_latchkey_rejects_a_python_signature_that_does_not_cover_the_target_uri():
    request, _ = python_signed_request(covered=("@method", "@authority", "@path", "content-digest", "content-type"))
    code, verdict = run_vector("verify", stdin=request)
    assert code == 1 and verdict == {"ok": False, "error": "component not covered: @target-uri"}, verdict
