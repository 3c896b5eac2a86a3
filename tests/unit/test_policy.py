"""`Policy.admit`: what a worker lets a job ask for, and the normalised spec it runs with."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import ValidationError

from hatchway.errors import InputTooLarge, InvalidRequest, LimitTooHigh, NotAllowed
from hatchway.jobs.policy import Policy
from hatchway.models import JobRequest, Limits, ResolvedLimits

MakePolicy = Callable[..., Policy]
MakeRequest = Callable[..., JobRequest]
PATTERNS = ["alpine:*", "python:3.*", "ghcr.io/acme/*"]
DEFAULT_LIMITS = ResolvedLimits(timeout_s=30, memory_mb=128, cpus=0.5, pids=64, output_bytes=4096)
MAX_LIMITS = ResolvedLimits(timeout_s=600, memory_mb=2048, cpus=2.0, pids=512, output_bytes=1 << 20)
MAX_INPUT_BYTES = 1000


@pytest.fixture
def make_policy(make_policy: MakePolicy) -> MakePolicy:
    """The shared factory, pinned to this module's limits so the numbers below are visible."""

    def make(**overrides: object) -> Policy:
        options: dict[str, object] = {
            "default_limits": DEFAULT_LIMITS,
            "max_limits": MAX_LIMITS,
            "max_input_bytes": MAX_INPUT_BYTES,
        }
        return make_policy(**{**options, **overrides})

    return make


@pytest.mark.parametrize("image", ["alpine:3", "alpine:3.20", "python:3.12-slim", "ghcr.io/acme/tool:1"])
def test_an_image_matching_a_pattern_is_admitted(
    make_policy: MakePolicy, make_request: MakeRequest, image: str
) -> None:
    spec = make_policy(allowed_images=PATTERNS).admit(make_request(image=image)).spec
    assert spec.image == image


@pytest.mark.parametrize("image", ["ubuntu:22.04", "alpine", "Alpine:3", "python:2.7", "ghcr.io/evil/acme:1"])
def test_an_image_matching_no_pattern_is_refused_by_name(
    make_policy: MakePolicy, make_request: MakeRequest, image: str
) -> None:
    with pytest.raises(NotAllowed, match=f"image '{image}' is not allowed") as caught:
        make_policy(allowed_images=PATTERNS).admit(make_request(image=image))
    assert caught.value.status == 403
    assert "alpine:*" in str(caught.value), "the message lists what is allowed"


def test_an_empty_allow_list_refuses_every_image(make_policy: MakePolicy, make_request: MakeRequest) -> None:
    with pytest.raises(NotAllowed, match=r"\(none\)"):
        make_policy(allowed_images=[]).admit(make_request(image="alpine:3"))


def test_host_network_is_refused_unless_allowed(make_policy: MakePolicy, make_request: MakeRequest) -> None:
    request = make_request(network="host")
    with pytest.raises(NotAllowed, match='network "host"'):
        make_policy(allow_host_network=False).admit(request)
    assert make_policy(allow_host_network=True).admit(request).spec.network == "host"


def test_network_none_is_always_admitted(make_policy: MakePolicy, make_request: MakeRequest) -> None:
    assert make_policy(allow_host_network=False).admit(make_request()).spec.network == "none"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timeout_s", MAX_LIMITS.timeout_s + 1),
        ("memory_mb", MAX_LIMITS.memory_mb + 1),
        ("cpus", MAX_LIMITS.cpus + 0.5),
        ("pids", MAX_LIMITS.pids + 1),
        ("output_bytes", MAX_LIMITS.output_bytes + 1),
    ],
)
def test_a_limit_above_the_maximum_is_refused_naming_the_field(
    policy: Policy, make_request: MakeRequest, field: str, value: float
) -> None:
    with pytest.raises(LimitTooHigh, match=rf"limits\.{field} = {value}") as caught:
        policy.admit(make_request(limits=Limits(**{field: value})))
    assert caught.value.status == 422


def test_every_limit_too_high_is_named(policy: Policy, make_request: MakeRequest) -> None:
    limits = Limits(memory_mb=MAX_LIMITS.memory_mb * 2, pids=MAX_LIMITS.pids * 2)
    with pytest.raises(LimitTooHigh) as caught:
        policy.admit(make_request(limits=limits))
    assert "limits.memory_mb" in str(caught.value)
    assert "limits.pids" in str(caught.value)
    assert "timeout_s" not in str(caught.value)


def test_limits_at_the_maximum_are_admitted(policy: Policy, make_request: MakeRequest) -> None:
    spec = policy.admit(make_request(limits=Limits(**MAX_LIMITS.model_dump()))).spec
    assert spec.limits == MAX_LIMITS


def test_absent_limits_take_the_defaults(policy: Policy, make_request: MakeRequest) -> None:
    assert policy.admit(make_request()).spec.limits == DEFAULT_LIMITS


def test_given_limits_replace_only_their_defaults(policy: Policy, make_request: MakeRequest) -> None:
    spec = policy.admit(make_request(limits=Limits(memory_mb=512, timeout_s=2.5))).spec
    assert spec.limits == DEFAULT_LIMITS.model_copy(update={"memory_mb": 512, "timeout_s": 2.5})


def test_a_string_command_runs_under_a_shell(policy: Policy, make_request: MakeRequest) -> None:
    spec = policy.admit(make_request(command="echo $HOME && ls | wc -l")).spec
    assert spec.command == ["/bin/sh", "-c", "echo $HOME && ls | wc -l"]


def test_a_list_command_is_kept_as_given(policy: Policy, make_request: MakeRequest) -> None:
    assert policy.admit(make_request(command=["python", "-c", "print(1)"])).spec.command == ["python", "-c", "print(1)"]


def test_input_over_the_cap_is_refused(policy: Policy, make_request: MakeRequest) -> None:
    request = make_request(stdin="x" * 600, files={"a.txt": "y" * 300, "b/c.txt": "z" * 101})
    with pytest.raises(InputTooLarge, match=f"1001 bytes.*at most {MAX_INPUT_BYTES}") as caught:
        policy.admit(request)
    assert caught.value.status == 413


def test_input_exactly_at_the_cap_is_admitted(policy: Policy, make_request: MakeRequest) -> None:
    spec = policy.admit(make_request(stdin="x" * 600, files={"a.txt": "y" * 400})).spec
    assert spec.stdin == "x" * 600


def test_input_size_counts_utf8_bytes_not_characters(policy: Policy, make_request: MakeRequest) -> None:
    with pytest.raises(InputTooLarge):
        policy.admit(make_request(stdin="é" * 501))  # 501 characters, 1002 bytes


def test_the_spec_carries_the_request(policy: Policy, make_request: MakeRequest) -> None:
    request = make_request(
        env={"A": "1"},
        stdin="in",
        files={"src/main.py": "print()"},
        workdir="/work",
        priority=7,
        labels={"team": "a"},
    )
    spec = policy.admit(request).spec
    assert (spec.env, spec.stdin, spec.files, spec.workdir) == ({"A": "1"}, "in", {"src/main.py": "print()"}, "/work")
    assert (spec.priority, spec.labels, spec.network) == (7, {"team": "a"}, "none")


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8000/b.tar.gz", True),
        ("HTTP://127.0.0.1:8000/b.tar.gz", True),
        ("http://127.0.0.1:1@127.0.0.2:8000/b.tar.gz", False),  # userinfo dressed up as the allowed host
        ("http://user:pw@127.0.0.1:8000/b.tar.gz", False),
        ("http://127.0.0.2:8000/b.tar.gz", False),
        ("file:///etc/passwd", False),
        ("not a url", False),
    ],
)
def test_bundle_urls_are_matched_on_where_they_really_lead(url: str, allowed: bool) -> None:
    from hatchway.jobs.policy import url_matches

    assert url_matches(["http://127.0.0.1:*"], url) is allowed


def test_file_urls_cannot_climb_out_of_an_allowed_folder() -> None:
    from hatchway.jobs.policy import url_matches

    assert url_matches(["file:///srv/bundles/*"], "file:///srv/bundles/a.tar.gz")
    assert url_matches(["file:///srv/bundles/*"], "file:///srv/bundles/x/../a.tar.gz")
    for climbing in ("../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd", "%2E%2E/secret.zip", "..%2fsecret.zip"):
        assert not url_matches(["file:///srv/bundles/*"], f"file:///srv/bundles/{climbing}"), climbing
    assert not url_matches(["https://cdn.example/bundles/*"], "https://cdn.example/bundles/%2e%2e/admin")


def test_a_source_s_item_may_name_its_master_s_origin_and_nobody_else_s(make_policy: MakePolicy) -> None:
    from hatchway.egress import SourceGrant

    grant = SourceGrant.of("judge", "http://10.0.0.5:8000/api", {"X-API-Key": "k"})
    policy = make_policy(bundle_allowed_urls=["https://*"], grants={"judge": grant})
    policy.require_url("http://10.0.0.5:8000/archives/t.zip", "problem_url", source="judge")
    for source in (None, "other"):
        with pytest.raises(NotAllowed, match="problem_url is not allowed"):
            policy.require_url("http://10.0.0.5:8000/archives/t.zip", "problem_url", source=source)
    with pytest.raises(NotAllowed, match="problem_url is not allowed"):
        policy.require_url("file:///etc/shadow", "problem_url", source="judge")


def test_a_callback_url_passes_the_callback_policy_into_the_spec(
    make_policy: MakePolicy, make_request: MakeRequest
) -> None:
    policy = make_policy(callback_allowed_urls=["http://127.0.0.1:*", "https://hooks.example/*"])
    spec = policy.admit(make_request(callback_url="http://127.0.0.1:8000/hook?x=1")).spec
    assert spec.callback_url == "http://127.0.0.1:8000/hook?x=1"
    assert policy.admit(make_request()).spec.callback_url is None
    for refused in (
        "http://127.0.0.2:8000/hook",  # no pattern allows it
        "http://user:pw@127.0.0.1:8000/hook",  # credentials
        "http://127.0.0.1:1@hooks.example/hook",  # userinfo dressed up as an allowed host
        "https://hooks.example:99999/",  # not a URL at all
    ):
        with pytest.raises(InvalidRequest, match="callback_url"):
            policy.admit(make_request(callback_url=refused))


def test_a_callback_url_is_http_or_https_whatever_the_patterns_say(make_policy: MakePolicy) -> None:
    with pytest.raises(InvalidRequest, match="http or https"):
        make_policy(callback_allowed_urls=["*"]).require_callback_url("ftp://127.0.0.1/hook")
    with pytest.raises(ValidationError, match="callback_url"):
        JobRequest(image="alpine:3", command=["true"], callback_url="file:///tmp/hook")
