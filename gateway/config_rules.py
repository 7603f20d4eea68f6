"""The cross-field rules of the configuration (what pydantic's per-field types cannot say):
trust model across IdPs, URLs, files, SCIM, branding, store. :func:`check_rules` returns every
problem as ``key.path: reason``; ``config.py`` loads and validates, then calls it.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from urllib.parse import urlsplit

from gateway.errors import UnsafeTarget
from gateway.settings import (
    AppSettings,
    BrandingSettings,
    OidcIdpSettings,
    SamlIdpSettings,
    Settings,
    StoreSettings,
    UncheckedSecret,
)
from gateway.targets import check_target
from gateway.tls import cert_key_problem
from gateway.tls import settings_problems as tls_settings_problems


def _https_problem(key: str, url: str | None, dev_mode: bool) -> str | None:
    if url is None:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"{key}: not a URL"
    allowed = ("https", "http") if dev_mode else ("https",)
    if parts.scheme not in allowed or not parts.hostname:
        return f"{key}: must be an absolute https:// URL" + (
            "" if dev_mode else " (http only in dev_mode)"
        )
    if parts.username or parts.password:
        return f"{key}: must not carry credentials"
    return None


def check_rules(settings: Settings, invalid: Collection[str] = ()) -> list[str]:
    """Cross-field rules pydantic cannot express; returns every problem found.

    ``invalid``: key paths (``gateway``, ``idp.x``, ``app.y``...) of sections that failed
    shape validation and stand in ``settings`` as defaults or not at all (check-config's full
    report, :mod:`gateway.config_report`): nothing is reported under them, and names that
    refer to them are not "unknown"."""
    known = frozenset(
        {*invalid, *(f"idp.{n}" for n in settings.idp), *(f"app.{n}" for n in settings.app)}
    )
    gw = settings.gateway
    dev = gw.dev_mode
    problems: list[str | None] = [_https_problem("gateway.public_url", gw.public_url, dev)]
    if urlsplit(gw.public_url).path not in ("", "/"):
        problems.append("gateway.public_url: must be an origin without a path")
    if not gw.cookie_secure and not dev:
        problems.append("gateway.cookie_secure: may be false only with gateway.dev_mode = true")
    # An UncheckedSecret (check-config --no-secrets) has no value to measure.
    if not isinstance(gw.signing_key, UncheckedSecret) and len(gw.signing_key.reveal()) < 32:
        problems.append("gateway.signing_key: must be at least 32 characters of random data")
    if not any(k == "idp" or k.startswith("idp.") for k in known):
        problems.append("idp: at least one identity provider is required")
    if not any(k == "app" or k.startswith("app.") for k in known):
        problems.append("app: at least one app is required")
    for name, idp in settings.idp.items():
        problems.extend(_idp_problems(f"idp.{name}", idp, known, dev))
    for name, app in settings.app.items():
        problems.extend(_app_problems(f"app.{name}", app, settings, dev, known))
    problems.extend(tls_settings_problems(settings))  # CA bundles: exist, PEM, certificates
    problems.extend(_scim_problems(settings, known))
    for name, portal in settings.portal.items():
        for app_name in portal.apps:
            if f"app.{app_name}" not in known:
                problems.append(f"portal.{name}.apps: unknown app {app_name!r}")
        for origin in portal.origins:
            if _https_problem("x", origin, dev) or urlsplit(origin).path:
                problems.append(f"portal.{name}.origins: {origin!r} is not an https origin")
    problems.extend(_branding_problems(settings.branding))
    if settings.store.backend == "redis":
        problems.extend(_store_problems(settings.store))
    return [p for p in problems if p and not _under(p, invalid)]


def _scim_problems(settings: Settings, known: Collection[str]) -> list[str | None]:
    """``[idp.<name>.scim]``: credentials present, apps known and accepting the IdP, and no
    sign-in that would reactivate an account the IdP deactivated over SCIM."""
    problems: list[str | None] = []
    for name, idp in settings.idp.items():
        if idp.scim is None:
            continue
        key = f"idp.{name}.scim"
        if not idp.scim.token_hashes:
            problems.append(f"{key}.token_hashes: at least one (see gateway scim-token)")
        if not idp.scim.apps:
            problems.append(f"{key}.apps: name the apps this IdP provisions")
        if not idp.email_domains:
            # Without domains a SCIM client could manage every account of the LMS tenant,
            # including people another IdP vouches for through another app on that tenant.
            problems.append(
                f"idp.{name}.email_domains: required for SCIM provisioning (the people this "
                "IdP's SCIM client may manage)"
            )
        for app_name in idp.scim.apps:
            app = settings.app.get(app_name)
            if app is None:
                if f"app.{app_name}" not in known:
                    problems.append(f"{key}.apps: unknown app {app_name!r}")
                continue
            if name not in app.idps:
                problems.append(f"{key}.apps: app {app_name!r} does not accept IdP {name!r}")
            if app.reactivate:
                problems.append(
                    f"app.{app_name}.reactivate: must be false for an app provisioned over "
                    "SCIM (a sign-in would reactivate an account the IdP deactivated)"
                )
    return list(dict.fromkeys(problems))  # an app two IdPs provision: said once


def _store_problems(store: StoreSettings) -> list[str | None]:
    """``[store]`` with ``backend = "redis"``: one URL or Sentinel, TLS files only with TLS."""
    # Only Redis deployments import redis-py (for the one host:port parser the store uses).
    from gateway.store.redis_connect import parse_address

    problems: list[str | None] = []
    if store.url and store.sentinels:
        problems.append("store.sentinels: set either store.url or store.sentinels, not both")
    if store.url:
        parts = urlsplit(store.url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            problems.append("store.url: must be a redis://, rediss:// or unix:// URL")
        if parts.username or parts.password:
            problems.append(
                "store.url: must not carry credentials (use store.username and store.password)"
            )
    for address in store.sentinels:
        try:
            parse_address(address)
        except ValueError:
            problems.append(f"store.sentinels: {address!r} is not host:port")
    if not store.sentinels:
        for key in ("sentinel_username", "sentinel_password", "sentinel_tls"):
            if getattr(store, key):
                problems.append(f"store.{key}: only used with store.sentinels")
    tls = store.sentinel_tls if store.sentinels else (store.url or "").startswith("rediss:")
    for key in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
        if getattr(store, key) and not tls:
            problems.append(
                f"store.{key}: TLS is off (use a rediss:// URL, or store.sentinel_tls = true)"
            )
    if store.username and store.password is None:
        problems.append("store.username: needs store.password (an ACL user's password)")
    if store.sentinel_username and store.sentinel_password is None:
        problems.append("store.sentinel_username: needs store.sentinel_password")
    if bool(store.tls_cert_file) != bool(store.tls_key_file):
        problems.append("store.tls_cert_file: goes together with store.tls_key_file")
    elif store.tls_cert_file and store.tls_key_file:
        problems.append(
            cert_key_problem(
                "store.tls_cert_file", store.tls_cert_file, "store.tls_key_file", store.tls_key_file
            )
        )
    return problems


def _under(problem: str, paths: Collection[str]) -> bool:
    """Whether ``problem`` ("key.path: reason") is about one of ``paths`` or a key inside."""
    key = problem.split(":", 1)[0]
    return any(key == path or key.startswith(f"{path}.") for path in paths)


# What ``[branding] logo_file`` may be: served by the gateway with this Content-Type.
LOGO_TYPES = {
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}
LOGO_MAX_BYTES = 512 * 1024


def _branding_problems(branding: BrandingSettings) -> list[str | None]:
    """Logo file readable and small, logo URL https (its origin joins the pages' CSP),
    support link https or mailto."""
    problems: list[str | None] = []
    if branding.logo_file is not None and branding.logo_url is not None:
        problems.append("branding: set logo_file or logo_url, not both")
    if branding.logo_file is not None:
        path = branding.logo_file
        suffix = os.path.splitext(path)[1].lower()
        if suffix not in LOGO_TYPES:
            problems.append(
                f"branding.logo_file: {path!r} must be a {', '.join(sorted(LOGO_TYPES))} file"
            )
        elif not os.path.isfile(path):
            problems.append(f"branding.logo_file: no such file {path!r}")
        elif os.path.getsize(path) > LOGO_MAX_BYTES:
            problems.append(f"branding.logo_file: {path!r} is larger than 512 KiB")
    if branding.logo_url is not None:
        # https even in dev_mode: the origin is allowed in every page's CSP img-src.
        problems.append(_https_problem("branding.logo_url", branding.logo_url, False))
    url = branding.support_url
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme == "mailto":
            if "@" not in parts.path or any(c in url for c in "\r\n<>\"'"):
                problems.append("branding.support_url: not a valid mailto: address")
        elif _https_problem("x", url, False):
            problems.append("branding.support_url: must be an https:// or mailto: URL")
    return problems


def _domain_problems(key: str, domains: tuple[str, ...]) -> list[str | None]:
    """Entries compared exactly against what an IdP asserts: plain lower-case domains."""
    return [
        f"{key}: {domain!r} must be a lower-case domain (no @, no wildcard)"
        for domain in domains
        if domain != domain.lower()
        or domain != domain.strip()
        or "." not in domain
        or any(c in domain for c in "@*/ ")
        or domain.startswith(".")
        or domain.endswith(".")
    ]


def _idp_problems(
    key: str, idp: OidcIdpSettings | SamlIdpSettings, known: Collection[str], dev: bool
) -> list[str | None]:
    authority = _domain_problems(f"{key}.email_domains", idp.email_domains)
    if isinstance(idp, OidcIdpSettings):
        bad_algs = [a for a in idp.algorithms if a == "none" or a.startswith("HS")]
        return [
            *authority,
            *_oidc_trust_problems(key, idp),
            _https_problem(f"{key}.issuer", idp.issuer, dev),
            f"{key}.algorithms: {', '.join(bad_algs)} not allowed (asymmetric algorithms only)"
            if bad_algs
            else None,
            f"{key}.algorithms: at least one algorithm is required" if not idp.algorithms else None,
            f"{key}.scopes: must include 'openid'" if "openid" not in idp.scopes else None,
        ]
    problems: list[str | None] = list(authority)
    sources = [
        idp.metadata_file is not None,
        idp.metadata_url is not None,
        idp.entity_id is not None or idp.sso_url is not None or bool(idp.certificate_files),
    ]
    problems += [
        _https_problem(f"{key}.metadata_url", idp.metadata_url, dev),
        _https_problem(f"{key}.sso_url", idp.sso_url, dev),
    ]
    if sum(sources) != 1:
        problems.append(
            f"{key}: set exactly one of metadata_file, metadata_url, or "
            "entity_id + sso_url + certificate_files"
        )
    elif sources[2] and not (idp.entity_id and idp.sso_url and idp.certificate_files):
        problems.append(f"{key}: inline metadata needs entity_id, sso_url and certificate_files")
    if (idp.sp_key_file is None) != (idp.sp_cert_file is None):
        problems.append(f"{key}: sp_key_file and sp_cert_file go together")
    if idp.sign_requests and idp.sp_key_file is None:
        problems.append(f"{key}.sign_requests: needs sp_key_file and sp_cert_file")
    if idp.require_encrypted_assertions and idp.sp_key_file is None:
        problems.append(
            f"{key}.require_encrypted_assertions: needs sp_key_file and sp_cert_file "
            "(the key that decrypts them)"
        )
    for file_key in ("metadata_file", "sp_key_file", "sp_cert_file"):
        path = getattr(idp, file_key)
        if path is not None and not os.path.isfile(path):
            problems.append(f"{key}.{file_key}: no such file {path!r}")
    for path in idp.certificate_files:
        if not os.path.isfile(path):
            problems.append(f"{key}.certificate_files: no such file {path!r}")
    if idp.default_app is not None and f"app.{idp.default_app}" not in known:
        problems.append(f"{key}.default_app: unknown app {idp.default_app!r}")
    return problems


def _oidc_trust_problems(key: str, idp: OidcIdpSettings) -> list[str | None]:
    problems: list[str | None] = []
    if idp.preset == "google":
        # Every Google Workspace tenant sends *an* hd; only the named ones may sign in.
        if not idp.hosted_domains:
            problems.append(
                f"{key}.hosted_domains: required with preset = 'google' (the Workspace "
                "domains whose accounts may sign in; any other tenant would be accepted)"
            )
        problems += _domain_problems(f"{key}.hosted_domains", idp.hosted_domains)
    elif idp.hosted_domains:
        problems.append(f"{key}.hosted_domains: only used with preset = 'google'")
    if idp.email_from_unverified_claims and not idp.email_domains:
        problems.append(
            f"{key}.email_from_unverified_claims: needs email_domains (claims that are not "
            "verified addresses may only name people in the IdP's own domains)"
        )
    return problems


def _trust_problems(key: str, app: AppSettings, settings: Settings) -> list[str | None]:
    """The trust model: no value one IdP controls may select another IdP's employee's LMS
    account, or read groups / grant roles the app does not trust it for."""
    problems: list[str | None] = []
    for field in ("group_idps", "role_idps"):
        for name in getattr(app, field) or ():
            if name not in app.idps:
                problems.append(f"{key}.{field}: {name!r} is not one of the app's idps")
    if len(app.idps) < 2:
        return problems
    idps = [name for name in dict.fromkeys(app.idps) if name in settings.idp]
    owner: dict[str, str] = {}
    for name in idps:
        domains = settings.idp[name].email_domains
        if not domains:
            problems.append(
                f"{key}.idps: IdP {name!r} needs email_domains (an app accepting several "
                "IdPs must know which e-mail domains each one vouches for)"
            )
        for domain in domains:
            other = owner.setdefault(domain, name)
            if other != name:
                problems.append(
                    f"{key}.idps: IdPs {other!r} and {name!r} both have e-mail domain "
                    f"{domain!r}; each domain may belong to one IdP of app {key[4:]!r}"
                )
    for field, value in (("username", app.username), ("match_by", app.match_by)):
        if value in ("subject", "employee_number"):
            problems.append(
                f"{key}.{field}: {value!r} is ambiguous for app {key[4:]!r} with several IdPs "
                "(another IdP could issue the same value); use 'email'"
            )
    if (app.required_groups or app.group_map) and app.group_idps is None:
        problems.append(
            f"{key}.group_idps: name the IdPs trusted to supply groups (required_groups, "
            "group_map) for an app with several IdPs"
        )
    if app.role_map and app.role_idps is None:
        problems.append(
            f"{key}.role_idps: name the IdPs trusted to grant roles (role_map) for an app "
            "with several IdPs"
        )
    return problems


def _app_problems(
    key: str, app: AppSettings, settings: Settings, dev: bool, known: Collection[str]
) -> list[str | None]:
    problems: list[str | None] = _trust_problems(key, app, settings)
    if not app.idps:
        problems.append(f"{key}.idps: at least one IdP is required")
    for idp_name in app.idps:
        if f"idp.{idp_name}" not in known:
            problems.append(f"{key}.idps: unknown IdP {idp_name!r}")
    for section in ("skyprep", "damstra", "litmos"):
        present = getattr(app, section) is not None
        if section == app.connector and not present:
            problems.append(f"{key}.{section}: missing (connector = {app.connector!r})")
        elif section != app.connector and present:
            problems.append(f"{key}.{section}: not used by connector {app.connector!r}")
    for domain in app.allowed_email_domains:
        if domain != domain.lower() or domain.startswith("@") or "." not in domain:
            problems.append(f"{key}.allowed_email_domains: {domain!r} must be a lower-case domain")
    if app.default_target is not None:
        try:
            check_target(app.default_target)
        except UnsafeTarget:
            problems.append(f"{key}.default_target: must look like kind:id (e.g. course:1234)")
    connector_settings = getattr(app, app.connector)
    if connector_settings is not None:
        problems.append(
            _https_problem(f"{key}.{app.connector}.api_url", connector_settings.api_url, dev)
        )
    return problems
