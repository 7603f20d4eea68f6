"""Fixtures shared by every test module: the real IdPs and Redis, each started once per
session on 127.0.0.1 and stopped at the end, and the demo stack, fresh for each test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.sandbox.demo import DemoStack, start_demo

pytest_plugins = [
    "tests.support.oidc_op",
    "tests.support.simplesamlphp",
    "tests.support.redis_server",
    "tests.support.test_ca",
]


@pytest.fixture
async def demo() -> AsyncIterator[DemoStack]:
    """The whole demo (gateway, demo IdPs, LMS simulators) on free 127.0.0.1 ports."""
    stack = await start_demo(0)
    try:
        yield stack
    finally:
        await stack.stop()


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    """A fresh browser: its own cookie jar, no redirects followed unless asked."""
    async with httpx.AsyncClient(timeout=20) as client:
        yield client
