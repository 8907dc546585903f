"""The Flowise HTTP client against stand-in servers that misbehave on purpose (one process each):
every failure becomes a typed error with a message that names the server and the fix, bounded in
time and memory, and never quoting what was sent."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from credbridge.core import redaction
from credbridge.flowise import client
from credbridge.local import controlplane
from credbridge.testing.flowise import BrokenFlowise

KEY = redaction.Redacted("api-key-canary-0123456789")
VALUE = "sk-value-canary-0123456789"
BODY = {
    "id": "0b6d3f1e-1d8e-4a47-9a53-5e4a3f0b9c11",
    "name": "n",
    "credentialName": "openAIApi",
    "plainDataObj": {"openAIApiKey": VALUE},
}


def make(url: str, **settings: float) -> client.FlowiseClient:
    return client.FlowiseClient(url, KEY, settings=client.ClientSettings(**settings))  # type: ignore[arg-type]


def assert_clean(error: BaseException) -> None:
    assert VALUE not in str(error) and KEY.reveal() not in str(error)


def test_a_working_server_answers_every_call(broken_flowise: Callable[..., BrokenFlowise]) -> None:
    flowise = make(broken_flowise("ok").url)
    assert flowise.version() == "0.0.0-stand-in"
    assert flowise.list_credentials() == []
    assert flowise.credential_types() == {"openAIApi"}
    assert flowise.put_credential(BODY).id == "stand-in"
    assert flowise.list_credentials() == [], "the kept-alive connection serves the next request"
    assert "api-key" not in repr(flowise)


@pytest.mark.parametrize(
    ("mode", "error_type", "words"),
    [
        ("status:401", client.Unauthorized, "spec.apiKeySecretRef"),
        ("status:403", client.Forbidden, "credentials:create"),
        ("status:404", client.NotFound, "without /api/v1"),
        ("html", client.NotFound, "web page"),
        ("status:500", client.ServerError, "HTTP 500"),
        ("status:502", client.ServerError, "HTTP 502"),
    ],
)
def test_http_failures_are_typed_and_name_the_fix(
    broken_flowise: Callable[..., BrokenFlowise], mode: str, error_type: type[client.FlowiseError], words: str
) -> None:
    server = broken_flowise(mode)
    with pytest.raises(error_type) as raised:
        make(server.url).put_credential(BODY)
    assert words in str(raised.value) and server.url in str(raised.value)
    assert_clean(raised.value)
    if error_type is client.Forbidden:
        assert raised.value.permission == "credentials:create"  # type: ignore[attr-defined]


def test_flowise_messages_are_scrubbed_of_what_was_sent(broken_flowise: Callable[..., BrokenFlowise]) -> None:
    # A real Flowise quotes input in some errors ("invalid input syntax for type uuid: ..."); the
    # stand-in's message is fixed, so scrub directly what a quoting server would send back.
    assert client._scrub(f'bad value "{VALUE}"', [VALUE]) == 'bad value "<redacted>"'


def test_a_5_mib_answer_fails_without_being_read_whole(broken_flowise: Callable[..., BrokenFlowise]) -> None:
    server = broken_flowise("big")
    with pytest.raises(client.BadResponse) as raised:
        make(server.url, max_response_bytes=1024 * 1024).list_credentials()
    assert "more than 1048576 bytes" in str(raised.value)


def test_a_slow_server_is_cut_off_at_the_request_timeout(broken_flowise: Callable[..., BrokenFlowise]) -> None:
    server = broken_flowise("slow:0.5")  # then trickles one byte every half second
    started = time.monotonic()
    with pytest.raises(client.Unreachable) as raised:
        make(server.url, request_timeout=2.0).list_credentials()
    assert "did not answer within 2s" in str(raised.value)
    assert time.monotonic() - started < 10, "the watchdog ends the request, not the server"


class _LateTimer(threading.Timer):
    """A watchdog whose `finished` flag is set long after it cut the connection, as on a busy machine."""

    def run(self) -> None:
        self.finished.wait(self.interval)
        if not self.finished.is_set():
            self.function(*self.args, **self.kwargs)
            time.sleep(3)
        self.finished.set()


def test_a_timeout_is_reported_as_one_even_when_the_watchdog_thread_lags(
    broken_flowise: Callable[..., BrokenFlowise], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cut read fails at once (IncompleteRead or a reset) while the watchdog thread has not
    # finished yet: the error must still say "did not answer", not "not reachable".
    monkeypatch.setattr(client.threading, "Timer", _LateTimer)
    server = broken_flowise("slow:0.5")
    with pytest.raises(client.Unreachable) as raised:
        make(server.url, request_timeout=2.0).list_credentials()
    assert "did not answer within 2s" in str(raised.value), str(raised.value)


def test_connection_problems_and_tls(broken_flowise: Callable[..., BrokenFlowise]) -> None:
    closed = f"http://127.0.0.1:{controlplane.free_port()}"
    with pytest.raises(client.Unreachable) as raised:
        make(closed).list_credentials()
    assert "not reachable" in str(raised.value) and "ConnectionRefusedError" in str(raised.value)

    with pytest.raises(client.Unreachable):
        make(broken_flowise("close").url).list_credentials()

    plain = broken_flowise("ok")
    with pytest.raises(client.TlsFailure) as tls_raised:
        make(plain.url.replace("http://", "https://")).list_credentials()
    assert "spec.tls.caSecretRef" in str(tls_raised.value)

    secured = broken_flowise("ok", tls=True)
    with pytest.raises(client.TlsFailure) as untrusted:
        make(secured.url).list_credentials()
    assert "CERTIFICATE_VERIFY_FAILED" in str(untrusted.value)
    trusted = client.FlowiseClient(secured.url, KEY, ca_pem=secured.ca_pem)
    assert trusted.list_credentials() == []


def test_bad_urls_and_ca_bundles_are_refused_up_front() -> None:
    with pytest.raises(ValueError, match="not an http"):
        client.FlowiseClient("ftp://flowise", KEY)
    with pytest.raises(ValueError, match="not valid PEM"):
        client.FlowiseClient("https://flowise", KEY, ca_pem="not a certificate")
