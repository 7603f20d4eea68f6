"""Typed, frozen settings: data and defaults only.

Each class here is one TOML table of the configuration file (``config/gateway.example.toml``
documents every key). ``config.py`` loads the file, resolves secrets and validates it into
these classes, reporting every problem at once. Validation is pydantic's (unknown keys are
rejected); cross-field rules live in ``config.py``.

Secrets are never literal values in the file: a secret key takes ``{ env = "NAME" }`` or
``{ file = "/run/secrets/name" }`` and is resolved at load time into a :class:`Secret`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, PlainValidator, ValidationInfo
from pydantic.dataclasses import dataclass

STRICT = ConfigDict(extra="forbid", frozen=True)


class Secret:
    """A secret value whose ``repr``/``str`` never show it (safe in logs and tracebacks)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class UncheckedSecret(Secret):
    """A secret that was not available while linting (``check-config --no-secrets``).

    Only ever produced when validation runs with ``context["lint_secrets"]``; it cannot be
    revealed, so settings holding one can be checked but never used."""

    __slots__ = ("source",)

    def __init__(self, source: str) -> None:
        super().__init__("")
        self.source = source  # e.g. "environment variable X is not set": never a value

    def reveal(self) -> str:
        raise RuntimeError(f"secret not loaded ({self.source}): settings were only linted")


def _resolve_secret(value: Any, info: ValidationInfo) -> Secret:
    """Turn ``{env = NAME}`` / ``{file = PATH}`` into a Secret; refuse literal values."""
    if isinstance(value, Secret):
        return value
    if isinstance(value, str):
        raise ValueError(
            'secrets may not be written in the file; use { env = "NAME" } or { file = "PATH" }'
        )
    if not isinstance(value, dict) or set(value) not in ({"env"}, {"file"}):
        raise ValueError('expected { env = "NAME" } or { file = "PATH" }')
    environ: dict[str, str] = (info.context or {}).get("environ", {})
    lint = bool((info.context or {}).get("lint_secrets"))
    if "env" in value:
        name = str(value["env"])
        if not environ.get(name):
            if lint:
                return UncheckedSecret(f"environment variable {name} is not set")
            raise ValueError(f"environment variable {name} is not set or empty")
        return Secret(environ[name])
    path = str(value["file"])
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read().strip()
    except OSError as exc:
        if lint:
            return UncheckedSecret(f"secret file {path}: {exc.strerror}")
        raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
    if not text:
        raise ValueError(f"secret file {path} is empty")
    return Secret(text)


SecretValue = Annotated[Secret, PlainValidator(_resolve_secret)]
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


@dataclass(config=STRICT)
class GatewaySettings:
    """``[gateway]``: the gateway's own address, cookies and behaviour."""

    public_url: str
    signing_key: SecretValue
    cookie_secure: bool = True
    session_lifetime_seconds: Annotated[int, Field(ge=60, le=7 * 24 * 3600)] = 8 * 3600
    # Hosts a ``target`` / RelayState may send the browser to besides our own pages.
    allowed_return_hosts: tuple[str, ...] = ()
    # Demo/local only: allows http:// URLs for IdPs and LMS hosts. Never in production.
    dev_mode: bool = False
    # How long a started sign-in may take at the IdP before its state expires.
    login_timeout_seconds: Annotated[int, Field(ge=30, le=3600)] = 600
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    # Abuse limits on anonymous state: sign-ins started but not finished (each is a few store
    # entries), in total and per client address; past either, /auth/<idp>/login refuses (429).
    max_pending_logins: Annotated[int, Field(ge=10, le=10_000_000)] = 100_000
    max_pending_logins_per_client: Annotated[int, Field(ge=1, le=100_000)] = 300
    # Language of the employee pages when neither ``?lang=``, the language cookie nor the
    # browser's Accept-Language names one the gateway has (en, de, fr, es).
    default_language: Literal["en", "de", "fr", "es"] = "en"
    # Private CAs for every outgoing TLS connection (IdPs, LMS APIs): a PEM bundle trusted
    # alongside the public bundle ("add") or instead of it ("replace"); see gateway/tls.py.
    # Per IdP ([idp.<name>]) and per app ([app.<name>.<connector>.http]) overrides exist.
    ca_file: str | None = None
    ca_mode: Literal["add", "replace"] = "add"


@dataclass(config=STRICT)
class BrandingSettings:
    """``[branding]``: how the employee pages look (``config.py`` checks files, URLs and
    colours; ``gateway/web/branding.py`` turns it into the page header, footer and CSS)."""

    company_name: Annotated[str, Field(min_length=1, max_length=80)] | None = None
    # A logo served by the gateway itself (PNG, SVG, JPEG or WebP, at most 512 KiB) ...
    logo_file: str | None = None
    # ... or one on an https:// host, whose origin is added to the pages' CSP img-src.
    logo_url: str | None = None
    # Buttons and links; the text on buttons is chosen for contrast (WCAG AA).
    primary_colour: Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")] = "#2b59c3"
    # Who to contact: shown with the support reference on error pages and in every footer.
    support_text: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    support_url: str | None = None


@dataclass(config=STRICT)
class OperatorSettings:
    """``[operator]``: where /metrics and detailed readiness are served (never to the public
    by default). ``port`` serves them on a separate listener on ``host``; ``token`` allows
    them on the public listener to a caller presenting ``Authorization: Bearer <token>``."""

    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    host: str = "127.0.0.1"
    token: SecretValue | None = None


@dataclass(config=STRICT)
class StoreSettings:
    """``[store]``: where state shared by replicas lives."""

    backend: Literal["memory", "redis"] = "memory"
    # One endpoint (unset: redis://127.0.0.1:6379/0) ... or Redis Sentinel: the sentinels
    # (host:port each) that name the primary of sentinel_service. Not both.
    url: str | None = None
    sentinels: tuple[str, ...] = ()
    sentinel_service: Annotated[str, Field(min_length=1, max_length=200)] = "mymaster"
    # The sentinels' own credentials (Sentinel's requirepass / an ACL user on them).
    sentinel_username: str | None = None
    sentinel_password: SecretValue | None = None
    # TLS to the sentinels and the primary they name (with url, rediss:// says it).
    sentinel_tls: bool = False
    # The data nodes' credentials: password alone, or an ACL user (Redis 6+, managed Redis).
    username: str | None = None
    password: SecretValue | None = None
    key_prefix: str = "gateway:"
    # Redis TLS: a CA bundle trusted besides the system's, and an optional client certificate.
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # Memory store: hard limit on entries. Full: new anonymous state (pending logins) is
    # refused; security entries (replay caches, sessions, revocations) are never evicted.
    memory_max_entries: Annotated[int, Field(ge=1000, le=50_000_000)] = 500_000


@dataclass(config=STRICT)
class ClaimMapping:
    """Which claim (OIDC) or attribute (SAML) carries each Identity field.

    Empty fields fall back to the IdP's ``preset``.
    """

    subject: str | None = None
    email: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    display_name: str | None = None
    employee_number: str | None = None
    groups: str | None = None


@dataclass(config=STRICT)
class ScimSettings:
    """``[idp.<name>.scim]``: this IdP's SCIM 2.0 provisioning client (``/scim/v2/{app}``).

    Only hashes of the bearer credentials are kept (``gateway scim-token`` makes a credential
    and its line); several let a credential be rotated without downtime."""

    token_hashes: tuple[Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")], ...]
    # The apps this IdP's SCIM client may provision (each must accept the IdP).
    apps: tuple[Name, ...]


@dataclass(config=STRICT)
class OidcIdpSettings:
    """``[idp.<name>]`` with ``type = "oidc"``."""

    type: Literal["oidc"]
    issuer: str
    client_id: str
    client_secret: SecretValue | None = None
    display_name: str | None = None
    preset: Literal["generic", "entra", "okta", "google", "keycloak"] = "generic"
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    claims: ClaimMapping = Field(default_factory=ClaimMapping)
    # E-mail domains this IdP is authoritative for (lower-case). Set, an e-mail outside them
    # is refused before any LMS call; required (and disjoint) for every IdP of an app that
    # accepts several IdPs.
    email_domains: tuple[str, ...] = ()
    # SCIM provisioning by this IdP (absent: none).
    scim: ScimSettings | None = None
    # preset "google": the Workspace domains (``hd``) accepted; required for that preset.
    hosted_domains: tuple[str, ...] = ()
    # Take the e-mail from claims that are not verified e-mail addresses (Entra's
    # preferred_username / upn). Off: only ``email`` is used. Microsoft advises against
    # authorising on those claims; turn on only with email_domains set.
    email_from_unverified_claims: bool = False
    # Audiences besides client_id an ID token may list (OIDC Core 3.1.3.7 step 3); any
    # other extra audience makes the token untrusted.
    trusted_audiences: tuple[str, ...] = ()
    # Signing algorithms accepted for ID tokens; never "none" nor an HMAC algorithm.
    algorithms: tuple[str, ...] = ("RS256", "PS256", "ES256")
    leeway_seconds: Annotated[int, Field(ge=0, le=300)] = 60
    max_token_age_seconds: Annotated[int, Field(ge=30, le=86400)] = 600
    # Call the userinfo endpoint: "auto" only when the ID token lacks a claim the mapping
    # reads (one IdP round trip saved per sign-in otherwise), "always", or "never".
    userinfo: Literal["auto", "always", "never"] = "auto"
    # After POST /logout, continue to the IdP's end_session_endpoint when it has one.
    end_session: bool = False
    # Least time between two JWKS fetches triggered by an unknown ``kid``.
    jwks_min_refresh_seconds: Annotated[int, Field(ge=1, le=3600)] = 60
    # HTTP to this IdP (discovery, JWKS, token, userinfo): seconds to connect / to wait for
    # each read; CA bundle and mode override [gateway] ca_file / ca_mode.
    connect_timeout: Annotated[float, Field(gt=0, le=30)] = 5.0
    read_timeout: Annotated[float, Field(gt=0, le=60)] = 10.0
    ca_file: str | None = None
    ca_mode: Literal["add", "replace"] | None = None


@dataclass(config=STRICT)
class SamlIdpSettings:
    """``[idp.<name>]`` with ``type = "saml"``."""

    type: Literal["saml"]
    sp_entity_id: str
    display_name: str | None = None
    # E-mail domains this IdP is authoritative for (see OidcIdpSettings.email_domains).
    email_domains: tuple[str, ...] = ()
    # SCIM provisioning by this IdP (absent: none).
    scim: ScimSettings | None = None
    # IdP metadata: one of metadata_file, metadata_url, or entity_id + sso_url + certificate_files.
    metadata_file: str | None = None
    metadata_url: str | None = None
    metadata_refresh_seconds: Annotated[int, Field(ge=60)] = 3600
    entity_id: str | None = None
    sso_url: str | None = None
    certificate_files: tuple[str, ...] = ()
    sp_key_file: str | None = None
    sp_cert_file: str | None = None
    sign_requests: bool = False
    # Which element the IdP signs: the assertion (default), the response, or both.
    signed: Literal["assertion", "response", "both", "either"] = "assertion"
    name_id_format: str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
    preset: Literal["generic", "entra", "adfs", "okta", "eduperson"] = "generic"
    attributes: ClaimMapping = Field(default_factory=ClaimMapping)
    clock_skew_seconds: Annotated[int, Field(ge=0, le=300)] = 60
    allow_idp_initiated: bool = False
    default_app: str | None = None
    allow_sha1: bool = False
    max_response_bytes: Annotated[int, Field(ge=4096, le=2_000_000)] = 256_000
    # Oldest Response/Assertion IssueInstant accepted (seconds, plus clock_skew_seconds).
    max_issue_instant_age_seconds: Annotated[int, Field(ge=30, le=3600)] = 300
    # Refuse assertions that are not encrypted (needs sp_key_file / sp_cert_file).
    require_encrypted_assertions: bool = False
    # Accept AES-CBC content encryption (legacy IdPs; AES-GCM otherwise). RSA PKCS#1 v1.5
    # key transport is never accepted.
    allow_legacy_cbc_encryption: bool = False
    # HTTP to this IdP (metadata_url): as for OIDC IdPs.
    connect_timeout: Annotated[float, Field(gt=0, le=30)] = 5.0
    read_timeout: Annotated[float, Field(gt=0, le=60)] = 10.0
    ca_file: str | None = None
    ca_mode: Literal["add", "replace"] | None = None


IdpSettings = Annotated[OidcIdpSettings | SamlIdpSettings, Field(discriminator="type")]


@dataclass(config=STRICT)
class BudgetSettings:
    """``[app.<name>.budget]``: the LMS calls per minute this app may spend."""

    calls_per_minute: Annotated[int, Field(ge=1, le=10_000)] = 100
    # A sign-in waits this long for a token before the queue page is shown.
    max_wait_seconds: Annotated[float, Field(ge=0, le=60)] = 5.0
    # A sign-in whose calls are further away than max_wait_seconds still reserves them, up to
    # this far ahead, and keeps that place in line across the queue page's reloads (0: off).
    max_queue_seconds: Annotated[float, Field(ge=0, le=3600)] = 600.0
    retries: Annotated[int, Field(ge=0, le=5)] = 2
    circuit_failures: Annotated[int, Field(ge=1, le=100)] = 5
    circuit_open_seconds: Annotated[float, Field(ge=1, le=600)] = 30.0
    # One employee (across sessions and replicas) may spend at most this many of the app's
    # calls per minute; more is the "just a moment" page (429). 6 fits two first sign-ins.
    per_employee_calls_per_minute: Annotated[int, Field(ge=1, le=10_000)] = 6
    # Every LMS call, retry and budget wait of one sign-in ends within this; past it the
    # employee gets the "training system unavailable" page at once.
    sign_in_deadline_seconds: Annotated[float, Field(ge=1, le=20)] = 15.0
    # Tokens of the shared bucket kept for sign-ins: SCIM and other background calls are
    # refused (429 + Retry-After) while the bucket holds this many or fewer.
    scim_reserve: Annotated[int, Field(ge=0, le=10_000)] = 5


@dataclass(config=STRICT)
class HttpSettings:
    """Timeouts for one connector's HTTP client (seconds), and its CA bundle override."""

    connect_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    read_timeout: Annotated[float, Field(gt=0, le=120)] = 15.0
    max_connections: Annotated[int, Field(ge=1, le=1000)] = 50
    # Override [gateway] ca_file / ca_mode for this app's LMS API.
    ca_file: str | None = None
    ca_mode: Literal["add", "replace"] | None = None


@dataclass(config=STRICT)
class SkyPrepSettings:
    """``[app.<name>.skyprep]``."""

    api_key: SecretValue
    # The tenant's SkyPrep domain, e.g. "acme.skyprepapp.com" (sent as acct_key).
    acct_key: str
    api_url: str = "https://api.skyprep.io/admin/api"
    # Host the returned sign-in link must be on; defaults to acct_key.
    login_host: str | None = None
    key_type: Literal["daily", "time", "otl"] = "otl"
    autocreate: bool = True
    http: HttpSettings = Field(default_factory=HttpSettings)


@dataclass(config=STRICT)
class DamstraSettings:
    """``[app.<name>.damstra]``."""

    access_key: SecretValue
    # The document's "API Endpoint" (its curl example uses the same host).
    api_url: str = "https://app.velpic.com/api/v2"
    # Host the generated sign-in and player links must be on (the documented embedUrl
    # example is on app.velpic.com).
    login_host: str = "app.velpic.com"
    # Documented values are disabled, never, day, week, month, year; "never"/"year" links
    # are long-lived credentials and "disabled" mints nothing usable, so only these three.
    expires_in: Literal["day", "week", "month"] = "day"
    # Embed every lesson type (embed_player/version/{id}) instead of the default player.
    embed_all_lesson_types: bool = False
    http: HttpSettings = Field(default_factory=HttpSettings)


@dataclass(config=STRICT)
class LitmosSettings:
    """``[app.<name>.litmos]``."""

    api_key: SecretValue
    # The company's Litmos host that LoginKey links must be on, e.g. "acme.litmos.com".
    login_host: str
    region: Literal["us", "eu", "au"] = "us"
    api_url: str | None = None
    source: str = "gateway"
    # Team ids every employee of this app is added to, and group -> team id mapping.
    teams: tuple[str, ...] = ()
    http: HttpSettings = Field(default_factory=HttpSettings)


@dataclass(config=STRICT)
class AppSettings:
    """``[app.<name>]``: one LMS tenant employees are sent to."""

    connector: Literal["skyprep", "damstra", "litmos"]
    idps: tuple[Name, ...]
    display_name: str | None = None
    # Access rules: all that are set must hold.
    allowed_email_domains: tuple[str, ...] = ()
    required_groups: tuple[str, ...] = ()
    # IdP group -> LMS group (or Litmos team id). Unmapped IdP groups are not sent.
    group_map: dict[str, str] = Field(default_factory=dict)
    # IdP group -> LMS role / access level; the first matching group wins.
    role_map: dict[str, str] = Field(default_factory=dict)
    default_role: str | None = None
    # IdPs whose groups this app reads (required_groups, group_map) and IdPs trusted to grant
    # roles above default_role (role_map). Unset: the app's IdP when it has exactly one; an app
    # with several IdPs and group rules or a role_map must name them.
    group_idps: tuple[Name, ...] | None = None
    role_idps: tuple[Name, ...] | None = None
    # Which Identity field becomes the LMS username / matches existing accounts.
    username: Literal["email", "subject", "employee_number"] = "email"
    match_by: Literal["email", "employee_number"] = "email"
    reactivate: bool = True
    update_on_login: bool = False
    # Let a sign-in use an existing LMS account with an admin/owner/manager role. Off: such an
    # account is never matched by just-in-time provisioning (the employee sees a clear page).
    adopt_privileged_accounts: bool = False
    # Where to send the employee inside the LMS when no target is given.
    default_target: str | None = None
    account_cache_seconds: Annotated[int, Field(ge=0, le=90 * 86400)] = 7 * 86400
    # A cached LMS account is looked at again (active? still there?) at most this long after
    # it was last checked; sign-ins in between do not extend it.
    revalidate_seconds: Annotated[int, Field(ge=0, le=86400)] = 86400
    # Hand a link the LMS makes reusable (SkyPrep daily keys, Damstra magic links; never
    # one-time keys or Litmos LoginKeys) to a repeat sign-in of the same employee instead of
    # an LMS call: "repeat_clicks" only within repeat_click_seconds of minting it,
    # "until_expiry" until it expires (opt-in: a bearer credential for that long, see
    # gateway/links.py and the README), "never". Never past revalidate_seconds.
    reuse_links: Literal["repeat_clicks", "until_expiry", "never"] = "repeat_clicks"
    repeat_click_seconds: Annotated[int, Field(ge=1, le=300)] = 10
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    skyprep: SkyPrepSettings | None = None
    damstra: DamstraSettings | None = None
    litmos: LitmosSettings | None = None


@dataclass(config=STRICT)
class PortalSettings:
    """``[portal.<name>]``: a portal back-end allowed to call ``/api/v1``."""

    # hex SHA-256 of the bearer credential; the credential itself is never stored.
    token_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    apps: tuple[Name, ...]
    # Origins allowed to frame /embed pages.
    origins: tuple[str, ...] = ()
    # Answer CORS for /api/v1 from ``origins``. Off by default: the bearer credential belongs
    # on the portal's server, never in browser JavaScript (any employee could read it).
    browser_cors: bool = False


@dataclass(config=STRICT)
class Settings:
    """The whole configuration."""

    gateway: GatewaySettings
    idp: dict[Name, IdpSettings]
    app: dict[Name, AppSettings]
    store: StoreSettings = Field(default_factory=StoreSettings)
    portal: dict[Name, PortalSettings] = Field(default_factory=dict)
    operator: OperatorSettings = Field(default_factory=OperatorSettings)
    branding: BrandingSettings = Field(default_factory=BrandingSettings)
