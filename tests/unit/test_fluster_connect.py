"""The Connect codec (hatchway.fluster.connect) and Fluster's messages: unary requests and answers round-trip in both
encodings, every error code is answered with the spec's HTTP status and read back, what is not a Connect call gets
a bare 415/405, a body that is not the method's message is invalid_argument, and the client maps what it gets
(error bodies, bare statuses, no answer) to codes. The generated module is checked against its .proto."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from hatchway.fluster import connect, methods
from hatchway.fluster.connect import Code, ConnectError, Encoding, NotConnect
from hatchway.fluster.proto import cluster_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "src" / "hatchway" / "fluster" / "proto"

# The spec's table (connectrpc.com/docs/protocol#error-codes, revised in 2024), written out here on its own so that a
# slip in the module's table cannot agree with itself.
SPEC_STATUS = {
    "canceled": 499,
    "unknown": 500,
    "invalid_argument": 400,
    "deadline_exceeded": 504,
    "not_found": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "resource_exhausted": 429,
    "failed_precondition": 400,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "data_loss": 500,
    "unauthenticated": 401,
}


def run_job_request() -> pb.Worker.RunJobRequest:
    """A RunJob with every kind of field set: bytes, a nested message, maps, repeated strings, a oneof."""
    return pb.Worker.RunJobRequest(
        job_id="exp/worker-0",
        serialized_entrypoint=b"\x80\x05\x95\x00\xff binary pickle",
        environment=pb.EnvironmentConfig(
            workspace="/home/me/ws", pip_packages=["numpy==2.1"], env_vars={"A": "1", "B": "two"}, extras=["tpu"]
        ),
        bundle_gcs_path="file:///tmp/bundle.zip",
        resources=pb.ResourceSpec(cpu=2, memory="512m", device=pb.DeviceConfig(cpu=pb.CpuDevice(variant="cpu"))),
        timeout_seconds=30,
        ports=["actor", "http"],
        attempt_id=2,
    )


@pytest.mark.parametrize("encoding", list(Encoding))
def test_a_request_and_its_answer_round_trip(encoding: Encoding) -> None:
    sent = run_job_request()
    got, answer_encoding = connect.read_request(
        methods.RUN_JOB,
        http_method="POST",
        content_type=encoding.content_type,
        body=connect.encode(sent, encoding),
        protocol_version="1",
    )
    assert got == sent
    assert answer_encoding is encoding

    status = pb.JobStatus(job_id="j", state=pb.JOB_STATE_RUNNING, ports={"actor": 31001}, current_attempt_id=2)
    reply = connect.message_reply(status, answer_encoding)
    assert (reply.status, reply.content_type) == (200, encoding.content_type)
    assert connect.read_reply(methods.GET_JOB_STATUS, encoding, 200, reply.content_type, reply.body) == status


def test_json_is_protobuf_json_camel_case_int64_as_strings_and_set_zeros_kept() -> None:
    body = connect.encode(pb.Worker.HealthResponse(healthy=True, uptime_ms=1500, running_jobs=0), Encoding.JSON)
    # edition 2023: a field set to zero has presence and is written, as the real worker's answers are
    assert json.loads(body) == {"healthy": True, "uptimeMs": "1500", "runningJobs": 0}
    # a reader takes numbers or strings for int64, snake_case or camelCase names, and skips fields it does not know
    read = connect.decode(
        pb.Worker.FetchLogsRequest,
        b'{"job_id": "j", "filter": {"startMs": 5, "max_lines": "7", "regex": "x+"}, "fromANewerPeer": 1}',
        Encoding.JSON,
    )
    assert read == pb.Worker.FetchLogsRequest(
        job_id="j", filter=pb.Worker.FetchLogsFilter(start_ms=5, max_lines=7, regex="x+")
    )


def test_the_json_content_type_may_carry_a_charset_and_the_body_may_be_gzipped() -> None:
    sent = pb.Worker.KillJobRequest(job_id="j", term_timeout_ms=250)
    got, encoding = connect.read_request(
        methods.KILL_JOB,
        http_method="POST",
        content_type="application/json; charset=utf-8",
        body=gzip.compress(connect.encode(sent, Encoding.JSON)),
        content_encoding="gzip",
    )
    assert (got, encoding) == (sent, Encoding.JSON)


@pytest.mark.parametrize("code", list(Code))
def test_each_error_code_is_answered_with_the_specs_status_and_read_back(code: Code) -> None:
    reply = connect.error_reply(ConnectError(code, f"it went {code.value}"))
    assert reply.status == SPEC_STATUS[code.value]
    assert reply.content_type == "application/json"
    assert json.loads(reply.body) == {"code": code.value, "message": f"it went {code.value}"}
    with pytest.raises(ConnectError) as raised:
        connect.read_reply(methods.HEALTH_CHECK, Encoding.PROTO, reply.status, reply.content_type, reply.body)
    assert (raised.value.code, raised.value.message, raised.value.http_status) == (
        code,
        f"it went {code.value}",
        SPEC_STATUS[code.value],
    )


def test_the_table_covers_every_code_of_the_spec() -> None:
    assert {code.value for code in Code} == set(SPEC_STATUS)


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        (Encoding.PROTO, b"\xff\xff\xff\xff"),  # not protobuf
        (Encoding.PROTO, b"\x0a\x05ab"),  # a length past the end
        (Encoding.JSON, b"{not json"),
        (Encoding.JSON, b""),  # no object at all
        (Encoding.JSON, b'{"jobId": {"nested": 1}}'),  # the wrong type for a string field
        (Encoding.JSON, b'{"termTimeoutMs": "soon"}'),
        (Encoding.JSON, b"\xff\xfe"),  # not UTF-8
    ],
)
def test_a_body_that_is_not_the_message_is_invalid_argument(encoding: Encoding, body: bytes) -> None:
    with pytest.raises(ConnectError) as raised:
        connect.read_request(methods.KILL_JOB, http_method="POST", content_type=encoding.content_type, body=body)
    assert raised.value.code is Code.INVALID_ARGUMENT
    assert connect.error_reply(raised.value).status == 400


def test_a_body_that_does_not_gunzip_is_invalid_argument_and_an_unknown_compression_unimplemented() -> None:
    def read(content_encoding: str) -> None:
        connect.read_request(
            methods.KILL_JOB,
            http_method="POST",
            content_type="application/proto",
            body=b"not gzip",
            content_encoding=content_encoding,
        )

    with pytest.raises(ConnectError) as raised:
        read("gzip")
    assert raised.value.code is Code.INVALID_ARGUMENT
    with pytest.raises(ConnectError) as raised:
        read("br")
    assert raised.value.code is Code.UNIMPLEMENTED


def test_a_gzipped_body_is_unzipped_no_further_than_max_bytes() -> None:
    sent = pb.Worker.KillJobRequest(job_id="j", term_timeout_ms=5)

    def read(body: bytes, max_bytes: int) -> pb.Worker.KillJobRequest:
        got, _ = connect.read_request(
            methods.KILL_JOB,
            http_method="POST",
            content_type="application/proto",
            body=body,
            content_encoding="gzip",
            max_bytes=max_bytes,
        )
        return got

    assert read(gzip.compress(sent.SerializeToString()), 64) == sent
    bomb = gzip.compress(b"\0" * 50_000_000)  # 50 MB of zeros in about 50 KB
    with pytest.raises(ConnectError) as raised:
        read(bomb, 1024 * 1024)
    assert raised.value.code is Code.RESOURCE_EXHAUSTED
    with pytest.raises(ConnectError) as cut:
        read(gzip.compress(sent.SerializeToString())[:-9], 64)
    assert cut.value.code is Code.INVALID_ARGUMENT


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "application/grpc", None, ""])
def test_an_unknown_content_type_is_refused_with_415_naming_both_encodings(content_type: str | None) -> None:
    with pytest.raises(NotConnect) as raised:
        connect.read_request(methods.RUN_JOB, http_method="POST", content_type=content_type, body=b"{}")
    reply = connect.refusal_reply(raised.value)
    assert reply.status == 415
    assert dict(reply.headers) == {"Accept-Post": "application/json, application/proto"}


def test_a_get_is_refused_with_405_and_a_wrong_protocol_version_is_invalid_argument() -> None:
    with pytest.raises(NotConnect) as refused:
        connect.read_request(methods.RUN_JOB, http_method="GET", content_type="application/json", body=b"{}")
    assert (refused.value.status, refused.value.headers) == (405, {"Allow": "POST"})
    with pytest.raises(ConnectError) as raised:
        connect.read_request(
            methods.RUN_JOB, http_method="POST", content_type="application/json", body=b"{}", protocol_version="2"
        )
    assert raised.value.code is Code.INVALID_ARGUMENT


# --- the client, over a transport that answers as a server built on the same codec would ---


def serve(handler: Any) -> httpx.Client:
    """A client whose requests are answered by `handler(method, request) -> response` through the codec."""

    def answer(request: httpx.Request) -> httpx.Response:
        method = methods.WORKER_METHODS.get(request.url.path) or methods.CONTROLLER_METHODS.get(request.url.path)
        if method is None:
            return httpx.Response(404)
        try:
            message, encoding = connect.read_request(
                method,
                http_method=request.method,
                content_type=request.headers.get("content-type"),
                body=request.content,
                protocol_version=request.headers.get("connect-protocol-version"),
            )
            reply = connect.message_reply(handler(method, message), encoding)
        except ConnectError as error:
            reply = connect.error_reply(error)
        return httpx.Response(reply.status, headers={"Content-Type": reply.content_type}, content=reply.body)

    return httpx.Client(transport=httpx.MockTransport(answer))


@pytest.mark.parametrize("encoding", list(Encoding))
def test_call_round_trips_through_a_server_in_either_encoding(encoding: Encoding) -> None:
    seen: list[tuple[str, Any]] = []

    def handler(method: Any, message: Any) -> Any:
        seen.append((method.path, message))
        return pb.Worker.RunJobResponse(job_id=message.job_id, state=pb.JOB_STATE_PENDING)

    with serve(handler) as client:
        answer = connect.call(client, "http://worker:8080/", methods.RUN_JOB, run_job_request(), encoding=encoding)
    assert answer == pb.Worker.RunJobResponse(job_id="exp/worker-0", state=pb.JOB_STATE_PENDING)
    assert seen == [("/fluster.cluster.WorkerService/RunJob", run_job_request())]


def test_call_raises_the_servers_error() -> None:
    def handler(method: Any, message: Any) -> Any:
        raise ConnectError(Code.FAILED_PRECONDITION, "Job j already completed with state JOB_STATE_SUCCEEDED")

    with serve(handler) as client, pytest.raises(ConnectError) as raised:
        connect.call(client, "http://w", methods.KILL_JOB, pb.Worker.KillJobRequest(job_id="j"))
    assert (raised.value.code, raised.value.http_status) == (Code.FAILED_PRECONDITION, 400)
    assert "already completed" in raised.value.message


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, Code.INTERNAL), (401, Code.UNAUTHENTICATED), (403, Code.PERMISSION_DENIED), (404, Code.UNIMPLEMENTED),
     (429, Code.UNAVAILABLE), (502, Code.UNAVAILABLE), (503, Code.UNAVAILABLE), (504, Code.UNAVAILABLE),
     (418, Code.UNKNOWN), (500, Code.UNKNOWN)],
)  # fmt: skip
def test_an_error_answer_without_a_connect_body_gets_the_code_of_its_status(status: int, code: Code) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, text="<html>proxy says no</html>"))
    with httpx.Client(transport=transport) as client, pytest.raises(ConnectError) as raised:
        connect.call(client, "http://w", methods.HEALTH_CHECK, pb.Empty())
    assert (raised.value.code, raised.value.http_status) == (code, status)


def test_an_unknown_code_in_an_error_body_is_unknown() -> None:
    body = json.dumps({"code": "teapot", "message": "short and stout"})
    transport = httpx.MockTransport(
        lambda request: httpx.Response(418, headers={"Content-Type": "application/json"}, text=body)
    )
    with httpx.Client(transport=transport) as client, pytest.raises(ConnectError) as raised:
        connect.call(client, "http://w", methods.HEALTH_CHECK, pb.Empty())
    assert (raised.value.code, raised.value.message) == (Code.UNKNOWN, "short and stout")


def test_an_answer_in_another_encoding_is_internal() -> None:
    body = connect.encode(pb.Worker.HealthResponse(healthy=True), Encoding.JSON)
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, headers={"Content-Type": "application/json"}, content=body)
    )
    with httpx.Client(transport=transport) as client, pytest.raises(ConnectError) as raised:
        connect.call(client, "http://w", methods.HEALTH_CHECK, pb.Empty(), encoding=Encoding.PROTO)
    assert raised.value.code is Code.INTERNAL


def test_the_client_sends_the_protocols_headers() -> None:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        reply = connect.message_reply(pb.Worker.HealthResponse(healthy=True), Encoding.PROTO)
        return httpx.Response(200, headers={"Content-Type": reply.content_type}, content=reply.body)

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        connect.call(client, "http://w", methods.HEALTH_CHECK, pb.Empty(), timeout_s=2.5)
    (request,) = sent
    assert request.method == "POST"
    assert request.url.path == "/fluster.cluster.WorkerService/HealthCheck"
    assert request.headers["content-type"] == "application/proto"
    assert request.headers["connect-protocol-version"] == "1"
    assert request.headers["connect-timeout-ms"] == "2500"


def test_no_answer_is_unavailable_and_a_late_one_deadline_exceeded() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    for transport, code in ((refuse, Code.UNAVAILABLE), (stall, Code.DEADLINE_EXCEEDED)):
        with httpx.Client(transport=httpx.MockTransport(transport)) as client, pytest.raises(ConnectError) as raised:
            connect.call(client, "http://w", methods.HEALTH_CHECK, pb.Empty())
        assert raised.value.code is code


async def test_call_async_round_trips() -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        message, encoding = connect.read_request(
            methods.REPORT_JOB_STATE,
            http_method=request.method,
            content_type=request.headers["content-type"],
            body=request.content,
        )
        assert message.state == pb.JOB_STATE_SUCCEEDED
        reply = connect.message_reply(pb.Controller.ReportJobStateResponse(), encoding)
        return httpx.Response(200, headers={"Content-Type": reply.content_type}, content=reply.body)

    report = pb.Controller.ReportJobStateRequest(worker_id="w", job_id="j", state=pb.JOB_STATE_SUCCEEDED)
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        for encoding in Encoding:
            got = await connect.call_async(client, "http://c", methods.REPORT_JOB_STATE, report, encoding=encoding)
            assert got == pb.Controller.ReportJobStateResponse()


# --- the schema ---


def test_the_methods_match_the_services_of_the_schema() -> None:
    listed = {**methods.WORKER_METHODS, **methods.CONTROLLER_METHODS}
    in_schema = {
        f"/{service.full_name}/{method.name}": (method.input_type.full_name, method.output_type.full_name)
        for service in pb.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert {path: (m.request.DESCRIPTOR.full_name, m.response.DESCRIPTOR.full_name) for path, m in listed.items()} == (
        in_schema
    )
    assert set(methods.WORKER_METHODS) == {
        f"/fluster.cluster.WorkerService/{name}"
        for name in ("RunJob", "GetJobStatus", "ListJobs", "FetchLogs", "KillJob", "HealthCheck")
    }


def test_the_committed_module_is_what_the_proto_generates(tmp_path: Path) -> None:
    plugin = Path(sys.executable).parent / "protoc-gen-mypy"
    assert plugin.exists(), "mypy-protobuf is missing: scripts/setup.sh --dev"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'src'}", f"--python_out={tmp_path}",
         f"--plugin=protoc-gen-mypy={plugin}", f"--mypy_out={tmp_path}", str(PROTO_DIR / "cluster.proto")],
        check=True, capture_output=True,
    )  # fmt: skip
    for name in ("cluster_pb2.py", "cluster_pb2.pyi"):
        generated = (tmp_path / "hatchway" / "fluster" / "proto" / name).read_text()
        assert generated == (PROTO_DIR / name).read_text(), f"{name} is stale: run scripts/gen-proto.sh"
