"""Connect RPC's unary calls, both ways: decoding a request and encoding its answer or error, and calling a method.

The Connect protocol (connectrpc.com/docs/protocol) carries a unary call as an HTTP POST to `/<service>/<method>`
whose body is the request message, binary (`application/proto`) or protobuf JSON (`application/json`); the answer
is 200 with the response message in the same encoding, or an error: the HTTP status the spec gives the error's
code and a JSON body `{"code": "not_found", "message": "..."}`. Fluster's controller and worker speak it through
connect-python, whose clients send binary by default (docs/fluster-plan.md). This module is the protocol only:
which method a path names and what it does belong to its callers, so the worker's routes, the controller's test
double and a client share one codec.

Requests that are not a Connect call at all get a bare HTTP answer (`NotConnect`): a content type that is neither
encoding (415, with `Accept-Post`), a method other than POST (405, with `Allow`), a path that names no method (404).
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

import httpx
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from hatchway.errors import HatchwayError

Req = TypeVar("Req", bound=Message)
Res = TypeVar("Res", bound=Message)

PROTOCOL_VERSION = "1"
"""The `Connect-Protocol-Version` a client sends; a server refuses any other value (a missing one is allowed)."""


class Code(StrEnum):
    """Connect's error codes, as they are written on the wire."""

    CANCELED = "canceled"
    UNKNOWN = "unknown"
    INVALID_ARGUMENT = "invalid_argument"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    PERMISSION_DENIED = "permission_denied"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    FAILED_PRECONDITION = "failed_precondition"
    ABORTED = "aborted"
    OUT_OF_RANGE = "out_of_range"
    UNIMPLEMENTED = "unimplemented"
    INTERNAL = "internal"
    UNAVAILABLE = "unavailable"
    DATA_LOSS = "data_loss"
    UNAUTHENTICATED = "unauthenticated"


HTTP_STATUS: dict[Code, int] = {
    Code.CANCELED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}
"""The HTTP status of an error answer with each code (the spec's table, as revised in 2024 and as connect-go and
connect-python send it)."""

CODE_OF_HTTP_STATUS: dict[int, Code] = {
    400: Code.INTERNAL,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.UNIMPLEMENTED,
    429: Code.UNAVAILABLE,
    502: Code.UNAVAILABLE,
    503: Code.UNAVAILABLE,
    504: Code.UNAVAILABLE,
}
"""The code a client gives an error answer without a Connect body (a proxy's, a bare 404): the spec's mapping;
any other status is `unknown`."""


class ConnectError(HatchwayError):
    """A Connect error: raised by a method's handler to answer with it, and by `call` for an error answer."""

    def __init__(self, code: Code, message: str = "", *, http_status: int | None = None) -> None:
        super().__init__(f"{code.value}: {message}" if message else code.value)
        self.code = code
        self.message = message
        self.http_status = HTTP_STATUS[code] if http_status is None else http_status
        """The status it is (or was) answered with."""


class NotConnect(HatchwayError):
    """A request that is not a Connect call (wrong content type, HTTP method or path): answered with a bare status."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class Encoding(StrEnum):
    """A unary message's encoding, named as in its content type `application/<name>`."""

    PROTO = "proto"
    JSON = "json"

    @property
    def content_type(self) -> str:
        return f"application/{self.value}"


ACCEPT_POST = ", ".join(encoding.content_type for encoding in (Encoding.JSON, Encoding.PROTO))


def encoding_of(content_type: str | None) -> Encoding | None:
    """The encoding a unary content type names (parameters such as `charset=utf-8` are ignored), or None."""
    media = (content_type or "").partition(";")[0].strip().lower()
    prefix = "application/"
    if not media.startswith(prefix):
        return None
    try:
        return Encoding(media.removeprefix(prefix))
    except ValueError:
        return None


@dataclass(frozen=True)
class Method(Generic[Req, Res]):
    """One unary method: where it is posted and the messages it takes and answers."""

    service: str
    """The service's full name, e.g. `fluster.cluster.WorkerService`."""
    name: str
    request: type[Req]
    response: type[Res]

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


@dataclass(frozen=True)
class Reply:
    """An HTTP answer to a unary call, ready to send."""

    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


# --- messages ---


def encode(message: Message, encoding: Encoding) -> bytes:
    """A message as a unary body: binary, or protobuf JSON (field names in lowerCamelCase, as protojson writes)."""
    if encoding is Encoding.PROTO:
        return message.SerializeToString()
    return json_format.MessageToJson(message, indent=None).encode()


def decode(message_type: type[Req], body: bytes, encoding: Encoding) -> Req:
    """A unary body as a message; `ConnectError(invalid_argument)` if it is not one. JSON fields the schema does not
    know are ignored (as connect-go's JSON codec does), so a newer peer's additions do not break the call."""
    message = message_type()
    try:
        if encoding is Encoding.PROTO:
            message.ParseFromString(body)
        else:
            json_format.Parse(body.decode("utf-8"), message, ignore_unknown_fields=True)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, RecursionError) as exc:
        raise ConnectError(Code.INVALID_ARGUMENT, f"cannot decode a {message_type.__name__}: {exc}") from exc
    return message


def _decompress(body: bytes, content_encoding: str | None, max_bytes: int | None = None) -> bytes:
    """The body as sent; gunzipped to at most `max_bytes` (a few KiB of gzip can stand for gigabytes)."""
    name = (content_encoding or "identity").strip().lower()
    if name == "identity":
        return body
    if name != "gzip":
        raise ConnectError(Code.UNIMPLEMENTED, f"unknown compression {name!r}: this server takes gzip or identity")
    if max_bytes is None:
        try:
            return gzip.decompress(body)
        except (OSError, EOFError, zlib.error) as exc:
            raise ConnectError(Code.INVALID_ARGUMENT, f"cannot gunzip the request body: {exc}") from exc
    unzip = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # one gzip member, as connect clients send
    try:
        data = unzip.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise ConnectError(Code.INVALID_ARGUMENT, f"cannot gunzip the request body: {exc}") from exc
    if len(data) > max_bytes:
        raise ConnectError(Code.RESOURCE_EXHAUSTED, f"the request is larger than {max_bytes} bytes unzipped")
    if not unzip.eof:
        raise ConnectError(Code.INVALID_ARGUMENT, "cannot gunzip the request body: it ends early")
    return data


# --- the server's side ---


def read_request(
    method: Method[Req, Any],
    *,
    http_method: str,
    content_type: str | None,
    body: bytes,
    content_encoding: str | None = None,
    protocol_version: str | None = None,
    max_bytes: int | None = None,
) -> tuple[Req, Encoding]:
    """A unary call's request message, and the encoding its answer must use (`max_bytes`: the most its body may
    hold once unzipped; past it, `resource_exhausted`).

    Raises `NotConnect` for a request that is not a Connect unary call (not a POST, or a content type that is
    neither encoding), `ConnectError` for one that is but cannot be read (a wrong protocol version, an unknown
    compression, a body that is not the method's message)."""
    if http_method.upper() != "POST":
        raise NotConnect(405, f"{method.path} takes POST", {"Allow": "POST"})
    encoding = encoding_of(content_type)
    if encoding is None:
        raise NotConnect(415, f"unsupported content type {content_type!r}", {"Accept-Post": ACCEPT_POST})
    if protocol_version is not None and protocol_version.strip() != PROTOCOL_VERSION:
        raise ConnectError(Code.INVALID_ARGUMENT, f"connect-protocol-version must be 1, not {protocol_version!r}")
    return decode(method.request, _decompress(body, content_encoding, max_bytes), encoding), encoding


def message_reply(message: Message, encoding: Encoding) -> Reply:
    """The 200 answer carrying `message`."""
    return Reply(200, encoding.content_type, encode(message, encoding))


def error_reply(error: ConnectError) -> Reply:
    """The answer to a failed call: the code's HTTP status and the JSON error body (always JSON, whatever the
    request's encoding)."""
    body: dict[str, str] = {"code": error.code.value}
    if error.message:
        body["message"] = error.message
    return Reply(HTTP_STATUS[error.code], Encoding.JSON.content_type, json.dumps(body).encode())


def refusal_reply(refusal: NotConnect) -> Reply:
    """The bare HTTP answer to a request that is not a Connect call."""
    return Reply(refusal.status, "text/plain; charset=utf-8", refusal.message.encode(), tuple(refusal.headers.items()))


# --- the client's side ---


def request_headers(encoding: Encoding, timeout_s: float | None = None) -> dict[str, str]:
    """The headers of a unary call (`Connect-Timeout-Ms` tells the server how long the caller waits)."""
    headers = {"Content-Type": encoding.content_type, "Connect-Protocol-Version": PROTOCOL_VERSION}
    if timeout_s is not None:
        headers["Connect-Timeout-Ms"] = str(max(1, int(timeout_s * 1000)))
    return headers


def error_of(status: int, content_type: str | None, body: bytes) -> ConnectError:
    """The error an answer other than 200 stands for: its JSON body's code and message, or, for a body that is not
    a Connect error, the code the spec gives its HTTP status."""
    if encoding_of(content_type) is Encoding.JSON:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("code"), str):
            try:
                code = Code(data["code"])
            except ValueError:
                code = Code.UNKNOWN
            message = data.get("message")
            return ConnectError(code, message if isinstance(message, str) else "", http_status=status)
    detail = body[:200].decode("utf-8", "replace").strip()
    return ConnectError(CODE_OF_HTTP_STATUS.get(status, Code.UNKNOWN), detail or f"HTTP {status}", http_status=status)


def read_reply(method: Method[Any, Res], encoding: Encoding, status: int, content_type: str | None, body: bytes) -> Res:
    """The response message of a unary answer, or the `ConnectError` it carries."""
    if status != 200:
        raise error_of(status, content_type, body)
    answered = encoding_of(content_type)
    if answered is not encoding:
        raise ConnectError(
            Code.INTERNAL, f"the answer is {content_type!r}, not {encoding.content_type}", http_status=status
        )
    try:
        return decode(method.response, body, encoding)
    except ConnectError as exc:
        raise ConnectError(Code.INTERNAL, f"a malformed answer: {exc.message}", http_status=status) from exc


def _url(base_url: str, method: Method[Any, Any]) -> str:
    return base_url.rstrip("/") + method.path


@contextmanager
def _transport_errors(method: Method[Any, Any]) -> Iterator[None]:
    """httpx's failures to get an answer, as the Connect errors a client reports for them."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise ConnectError(Code.DEADLINE_EXCEEDED, f"{method.path}: no answer in time ({exc})") from exc
    except httpx.TransportError as exc:
        raise ConnectError(Code.UNAVAILABLE, f"{method.path}: {exc!r}") from exc


def call(
    client: httpx.Client,
    base_url: str,
    method: Method[Req, Res],
    request: Req,
    *,
    encoding: Encoding = Encoding.PROTO,
    timeout_s: float | None = None,
) -> Res:
    """Call a unary method at `base_url` (`http://host:port`); its response, or `ConnectError`: the answer's error,
    `unavailable` when the server cannot be reached, `deadline_exceeded` when it does not answer in `timeout_s`."""
    with _transport_errors(method):
        answer = client.post(
            _url(base_url, method),
            content=encode(request, encoding),
            headers=request_headers(encoding, timeout_s),
            timeout=timeout_s if timeout_s is not None else httpx.USE_CLIENT_DEFAULT,
        )
    return read_reply(method, encoding, answer.status_code, answer.headers.get("content-type"), answer.content)


async def call_async(
    client: httpx.AsyncClient,
    base_url: str,
    method: Method[Req, Res],
    request: Req,
    *,
    encoding: Encoding = Encoding.PROTO,
    timeout_s: float | None = None,
) -> Res:
    """`call`, on an asyncio client."""
    with _transport_errors(method):
        answer = await client.post(
            _url(base_url, method),
            content=encode(request, encoding),
            headers=request_headers(encoding, timeout_s),
            timeout=timeout_s if timeout_s is not None else httpx.USE_CLIENT_DEFAULT,
        )
    return read_reply(method, encoding, answer.status_code, answer.headers.get("content-type"), answer.content)
