"""The API under generated requests (schemathesis, from the OpenAPI document the server publishes): no answer is
a 5xx, every answer matches its documented status, content type and schema, and every error has the
`{"error": {...}}` shape. Bounded: a fixed number of examples per operation, derandomised, so the suite's time
stays predictable and a failure repeats."""

from __future__ import annotations

import itertools
from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.acceptance.conftest import Server

pytestmark = pytest.mark.docker

STREAMS = {"GET /events"}
EXAMPLES_PER_OPERATION = 20  # for valid data, and as many for invalid data


def errors_have_the_documented_shape(ctx: Any, response: Any, case: Case) -> bool | None:
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"error body is {body!r}"
    assert {"code", "message"} <= body["error"].keys(), f"error body is {body!r}"
    return True


# What the issue asks of every answer. Not schemathesis's "positive data accepted": the document does not encode
# every rule (such as "exactly one of image and build"), and a 422 with a clear message is the right answer then.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    errors_have_the_documented_shape,
]


def test_generated_requests_get_documented_answers(server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    failures: dict[str, str] = {}
    # An event stream never ends by itself: it cannot be read to the end like the rest (its 4xx answers are tested
    # in test_events_and_logs.py).
    operations = [result.ok() for result in schema.get_all_operations() if result.ok().label not in STREAMS]
    assert len(operations) >= 15, "the document lists the API"
    for operation, mode in itertools.product(operations, GenerationMode):

        @hypothesis.given(case=operation.as_strategy(mode))
        @hypothesis.settings(
            max_examples=EXAMPLES_PER_OPERATION,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        def check(case: Case) -> None:
            case.call_and_validate(checks=CHECKS, timeout=30)

        try:
            check()
        except hypothesis.errors.Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE, f"{operation.label}: no valid request can be made"
            continue  # nothing about it can be invalid (no parameters, no body)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            failures[f"{operation.label} ({mode.value} data)"] = f"{type(exc).__name__}: {str(exc)[:1500]}"
    assert not failures, "\n\n".join(f"{label}\n{failure}" for label, failure in failures.items())
