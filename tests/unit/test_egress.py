"""Egress: URLs normalised before they are matched, addresses judged after they are resolved, and connections made
to the address judged."""

from __future__ import annotations

import asyncio
import http.server
import ipaddress
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hatchway.egress import AddressPolicy, GuardedTransport, Refused, is_public, normalise
from hatchway.egress.transport import _pinned
from tests.fakes import JsonHandler, serving

REFUSED = [
    "127.0.0.1",
    "127.255.0.9",
    "0.0.0.0",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # CGNAT
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.1",
    "198.18.0.1",
    "::",
    "::1",
    "fe80::1",
    "fec0::1",
    "fd00::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo of 127.0.0.1
    "2001:db8::1",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", REFUSED)
def test_addresses_that_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))
    assert not AddressPolicy().allows(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_the_operator_allows_networks_and_origins() -> None:
    policy = AddressPolicy.of(["127.0.0.0/8", "fd00::/8"], ["http://10.0.0.5:8000"])
    assert policy.allows(ipaddress.ip_address("127.0.0.2"))
    assert policy.allows(ipaddress.ip_address("::ffff:127.0.0.1")), "the mapped spelling of an allowed address"
    assert policy.allows(ipaddress.ip_address("fd00::5"))
    assert not policy.allows(ipaddress.ip_address("::1")) and not policy.allows(ipaddress.ip_address("10.0.0.5"))
    assert policy.allows_origin("http://10.0.0.5:8000/a") and not policy.allows_origin("http://10.0.0.5:8001/a")
    assert not policy.allows_origin("https://10.0.0.5:8000/a")


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("HTTP://Example.COM:80/a/./b/../c", "http://example.com/a/c"),
        ("https://example.com/a/%2e%2e/%2E%2e/b", "https://example.com/b"),
        ("https://example.com/%7euser/a%2Fb?x=%2e", "https://example.com/~user/a%2Fb?x=%2e"),
        ("https://user:pw@example.com:8443/#frag", "https://example.com:8443/"),
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
        ("file:///srv/bundles/%2e%2e/%2e%2e/etc/passwd", "file:///etc/passwd"),
        ("file://localhost//srv//bundles/./a%20b.zip", "file:///srv/bundles/a%20b.zip"),
    ],
)
def test_urls_are_matched_and_fetched_normalised(url: str, normal: str) -> None:
    assert normalise(url) == normal


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/x", "scheme 'ftp'"),
        ("http:///x", "no host"),
        ("file://host/x", "local path"),
        ("file:x.zip", "absolute path"),
        ("file:///x.zip?y", "no query"),
        ("file:///x.zip#y", "no query or fragment"),
        ("file:///a%00b", "NUL"),
        ("file:///%ff", "not UTF-8"),
    ],
)
def test_urls_that_cannot_be_fetched(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        normalise(url)


def test_a_request_pinned_to_an_address_keeps_its_host_s_name() -> None:
    request = httpx.Request("GET", "https://example.com:8443/b.zip")
    pinned = _pinned(request, ipaddress.ip_address("93.184.215.14"))
    assert str(pinned.url) == "https://93.184.215.14:8443/b.zip"
    assert pinned.headers["host"] == "example.com:8443"
    assert pinned.extensions["sni_hostname"] == "example.com", "TLS checks the certificate against the name"


@pytest.fixture
def answering() -> Iterator[tuple[str, list[str]]]:
    hosts: list[str] = []

    class Handler(JsonHandler):
        def do_GET(self) -> None:
            hosts.append(self.headers["Host"])
            self.answer(200, {"ok": True})

    with serving(Handler) as url:
        yield url, hosts


def resolving_to_loopback(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every name resolve to 127.0.0.1 in this event loop; returns the names looked up."""
    lookups: list[str] = []

    async def resolver(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolver)
    return lookups


async def test_a_name_is_resolved_once_and_the_address_judged_is_the_one_connected_to(
    answering: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, hosts = answering
    port = int(url.rpartition(":")[2])
    lookups = resolving_to_loopback(monkeypatch)
    allowed = GuardedTransport(AddressPolicy.of(["127.0.0.0/8"]))
    async with httpx.AsyncClient(transport=allowed, trust_env=False) as client:
        answer = await client.get(f"http://rebinding.test:{port}/x")
    assert answer.status_code == 200 and str(answer.request.url) == f"http://rebinding.test:{port}/x"
    assert lookups == ["rebinding.test"] and hosts == [f"rebinding.test:{port}"]
    async with httpx.AsyncClient(transport=GuardedTransport(AddressPolicy()), trust_env=False) as client:
        with pytest.raises(Refused, match=r"rebinding\.test is 127\.0\.0\.1, not a public address"):
            await client.get(f"http://rebinding.test:{port}/x")
    assert hosts == [f"rebinding.test:{port}"], "the refused request never left"


async def test_an_allowed_origin_goes_out_unchecked_and_no_other(answering: tuple[str, list[str]]) -> None:
    url, hosts = answering
    transport = GuardedTransport(AddressPolicy.of(origins=[url]))
    async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
        assert (await client.get(f"{url}/a")).status_code == 200
        with pytest.raises(Refused):
            await client.get(f"http://localhost:{url.rpartition(':')[2]}/a")
    assert len(hosts) == 1


@pytest.fixture
def tls_site(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """An https server on 127.0.0.1 whose certificate is for example.test (made by openssl, which must be
    installed); yields its port and the certificate, to trust."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=example.test",
         "-addext", "subjectAltName=DNS:example.test", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip

    class Handler(JsonHandler):
        def do_GET(self) -> None:
            self.answer(200, {"host": self.headers["Host"]})

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], cert
    server.shutdown()
    server.server_close()


async def test_tls_to_a_pinned_address_is_checked_against_the_url_s_host_name(
    tls_site: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, cert = tls_site
    resolving_to_loopback(monkeypatch)
    transport = GuardedTransport(AddressPolicy.of(["127.0.0.0/8"]), verify=ssl.create_default_context(cafile=cert))
    async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
        answer = await client.get(f"https://example.test:{port}/")
        assert answer.json() == {"host": f"example.test:{port}"}
        with pytest.raises(httpx.ConnectError, match="Hostname mismatch"):  # the same server, another name
            await client.get(f"https://other.test:{port}/")
