"""Fixtures shared by every test module: the real IdPs and Redis, each started once per
session on 127.0.0.1 and stopped at the end."""

pytest_plugins = [
    "tests.support.oidc_op",
    "tests.support.simplesamlphp",
    "tests.support.redis_server",
]
