"""Return targets: the open-redirect corpus is refused; safe values pass."""

from __future__ import annotations

import pytest

from gateway.errors import UnsafeTarget
from gateway.targets import (
    MAX_RETURN_TO_LENGTH,
    MAX_TARGET_LENGTH,
    check_return_to,
    check_target,
    safe_return_to,
)

OWN = "learn.example.com"
ALLOWED = ("intranet.example.com",)

OPEN_REDIRECTS = [
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "/%2Fevil.example",
    "/%252Fevil.example",
    "%2F%2Fevil.example",
    "/%5Cevil.example",
    "https:evil.example",
    "https:/evil.example",
    "https://evil.example/",
    "https://learn.example.com.evil.example/",
    "https://evil.example#@learn.example.com",
    "https://learn.example.com@evil.example/",
    "https://user:pw@learn.example.com/",
    "http://learn.example.com/",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "java\tscript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    " //evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/%09/evil.example",
    "/%0d%0aSet-Cookie:x=y",
    "\x00/",
    "/\u2028/evil.example",
    "https://evil.example\\@learn.example.com",
    "ftp://learn.example.com/",
    "",
]


@pytest.mark.parametrize("value", OPEN_REDIRECTS)
def test_open_redirect_tricks_are_refused(value: str) -> None:
    with pytest.raises(UnsafeTarget):
        check_return_to(value, own_host=OWN, allowed_hosts=ALLOWED)
    assert safe_return_to(value, own_host=OWN, allowed_hosts=ALLOWED) == "/"


@pytest.mark.parametrize(
    "value",
    [
        "/",
        "/embed/safety/lesson-schedules/42",
        "/login/training?target=course:12",
        "https://learn.example.com/x",
        "https://intranet.example.com/training",
        "https://INTRANET.example.com/a?b=c",
    ],
)
def test_safe_targets_pass(value: str) -> None:
    assert check_return_to(value, own_host=OWN, allowed_hosts=ALLOWED) == value


@pytest.mark.parametrize("value", ["/" + "a" * 512, "/" + "a" * 3000])
def test_overlong_return_targets_are_refused_not_replaced(value: str) -> None:
    # Abuse limit: a value no link of ours has is refused outright (400), so it never starts
    # a sign-in whose state the store would hold.
    with pytest.raises(UnsafeTarget):
        check_return_to(value, own_host=OWN, allowed_hosts=ALLOWED)
    with pytest.raises(UnsafeTarget):
        safe_return_to(value, own_host=OWN, allowed_hosts=ALLOWED)
    longest = "/embed/" + "a" * (MAX_RETURN_TO_LENGTH - 7)
    assert safe_return_to(longest, own_host=OWN, allowed_hosts=ALLOWED) == longest


def test_overlong_deep_link_targets_are_refused() -> None:
    assert check_target("c" * 32 + ":" + "1" * 64) is not None  # the longest valid shape
    assert len("c" * 32 + ":" + "1" * 64) == MAX_TARGET_LENGTH
    with pytest.raises(UnsafeTarget):
        check_target("course:" + "1" * 5000)


def test_http_only_in_dev_mode() -> None:
    assert check_return_to("http://127.0.0.1:8000/x", own_host="127.0.0.1:8000", dev_mode=True)
    with pytest.raises(UnsafeTarget):
        check_return_to("http://127.0.0.1:8000/x", own_host="127.0.0.1:8000")


@pytest.mark.parametrize("value", ["course:123", "course:a-B_9"])
def test_deep_link_targets(value: str) -> None:
    assert check_target(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "course",
        "course:",
        "https://evil.example",
        "course:1/../x",
        "course:1?x",
        ":1",
        "Course:1",
        "course:" + "1" * 65,
        "course:1\n",
    ],
)
def test_unknown_target_forms_are_refused(value: str) -> None:
    with pytest.raises(UnsafeTarget):
        check_target(value)
