"""``gateway demo``: start the demo stack (:mod:`gateway.sandbox.demo`), print what to open,
paste and check, and run until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from gateway.sandbox.demo import (
    PORTAL_TOKEN,
    SCIM_APPS,
    SCIM_TOKENS,
    DemoStack,
    start_demo,
)
from gateway.sandbox.employees import DEMO_EMAIL_DOMAIN, DEMO_SAML_EMAIL_DOMAIN


def banner(stack: DemoStack) -> str:
    g = stack.gateway_url
    return "\n".join(
        [
            "",
            "gateway demo is running (Ctrl-C stops it). Open in a browser:",
            f"  {g}/login/skyprep    sign in to the SkyPrep simulator",
            f"  {g}/login/damstra    sign in to the Damstra Learning simulator",
            f"  {g}/login/litmos     sign in to the Litmos simulator",
            *(
                f"  {g}/login/litmos?target=course:{course.OriginalId}   "
                f"straight into the course \"{course.Name}\""
                for course in stack.litmos.courses.values()
            ),
            f"  {stack.portal_url}/          a portal page embedding Bob Brown's lesson player",
            f"  {stack.saml_url}/          the demo SAML IdP (IdP-initiated sign-in)",
            f"  {stack.operator_url}/metrics   metrics (operator listener; not public)",
            "Pick any employee; Dana Visitor shows the access-denied page.",
            *_config_lines(stack),
            *_portal_lines(stack),
            *_scim_lines(stack),
            "",
        ]
    )


def _config_lines(stack: DemoStack) -> list[str]:
    if stack.files is None:
        return []
    return [
        "",
        f"Configuration it runs: {stack.files.config}",
        f"(secrets as env references; their demo values in {stack.files.env}). Check it:",
        *(f"  {line}" for line in stack.files.check_commands()),
    ]


def _portal_lines(stack: DemoStack) -> list[str]:
    """The portal back-end API with the demo portal's bearer token, ready to paste."""
    name, portal = next(iter(stack.settings.portal.items()))
    app = portal.apps[0]
    api = f"{stack.gateway_url}/api/v1/apps/{app}/lesson-schedules"
    employee = "employee=bob.brown@example.com"
    return [
        "",
        f"Portal back-end API ([portal.{name}], app {app}); its bearer token:",
        f"  TOKEN={PORTAL_TOKEN}",
        f'  curl -H "Authorization: Bearer $TOKEN" "{api}?{employee}&status=due"',
        f'  curl -H "Authorization: Bearer $TOKEN" '
        f'"{api}/{stack.lesson_schedule_id}/embed?{employee}"',
    ]


def _scim_lines(stack: DemoStack) -> list[str]:
    """Each app's SCIM base URL and each demo IdP's bearer token (SCIM clients, scim2-cli)."""
    return [
        "",
        "SCIM 2.0 provisioning (Users and Groups), one base URL per app:",
        *(f"  {stack.gateway_url}/scim/v2/{app}" for app in SCIM_APPS),
        *(f"  bearer token of IdP {idp} (users @{domain}): {SCIM_TOKENS[idp]}"
          for idp, domain in (("demo-oidc", DEMO_EMAIL_DOMAIN),
                              ("demo-saml", DEMO_SAML_EMAIL_DOMAIN))),
    ]


def run_demo(port: int = 8000, write_config: str | None = None) -> int:
    """``gateway demo``: run until Ctrl-C. Raises :class:`PortInUse` when a port is taken."""

    async def main() -> None:
        stack = await start_demo(port, config_path=write_config)
        print(banner(stack), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await stack.stop()

    from gateway.observability import configure_logging

    configure_logging("INFO", "text")
    asyncio.run(main())
    return 0
