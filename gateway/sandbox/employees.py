"""The demo directory: the employees the sandbox identity providers let you sign in as.

Used only by ``gateway demo`` and the tests (``DemoOidcProvider``, ``DemoSamlIdp``); never by
``gateway serve``. The directory lists everyone at ``@example.com`` (a reserved domain,
RFC 2606): the company whose IdP is the demo OpenID Provider. The demo SAML IdP stands for a
subsidiary whose people have ``@example.org`` addresses (:data:`DEMO_SAML_EMAIL_DOMAIN`; it
issues each person's address in that domain, see :meth:`DemoEmployee.at_domain`): the demo
config makes each IdP authoritative for its own domain only, so neither can sign anyone in as
the other's employee (the README's trust model).

The demo's access rule is meant to require one of :data:`DEMO_ALLOWED_GROUPS`: every employee
has ``"Staff"`` except the contractor Dana Visitor, who is only in ``"Contractors"`` and so
shows the "your account may not use this application" page.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# The groups the demo config's access rule should require (any of). Dana is in none of them.
DEMO_ALLOWED_GROUPS: tuple[str, ...] = ("Staff",)
# The e-mail domain of the demo OpenID Provider's employees (the directory's addresses).
DEMO_EMAIL_DOMAIN = "example.com"
# The e-mail domain the demo SAML IdP issues its employees' addresses in.
DEMO_SAML_EMAIL_DOMAIN = "example.org"


@dataclass(frozen=True, slots=True)
class DemoEmployee:
    """One person in the demo directory."""

    sub: str
    email: str
    given_name: str
    family_name: str
    employee_number: str
    groups: tuple[str, ...]
    title: str = ""

    @property
    def display_name(self) -> str:
        return f"{self.given_name} {self.family_name}"

    def at_domain(self, domain: str | None) -> DemoEmployee:
        """This person with their e-mail address in ``domain`` (unchanged for None)."""
        if domain is None:
            return self
        return replace(self, email=f"{self.email.rpartition('@')[0]}@{domain}")


EMPLOYEES: tuple[DemoEmployee, ...] = (
    DemoEmployee(
        sub="emp-1001",
        email="alice.anderson@example.com",
        given_name="Alice",
        family_name="Anderson",
        employee_number="1001",
        groups=("Staff", "Managers"),
        title="Operations manager",
    ),
    DemoEmployee(
        sub="emp-1002",
        email="bob.brown@example.com",
        given_name="Bob",
        family_name="Brown",
        employee_number="1002",
        groups=("Staff", "Safety"),
        title="Site safety officer",
    ),
    DemoEmployee(
        sub="emp-1003",
        email="chloe.nguyen@example.com",
        given_name="Chloé",
        family_name="Nguyen",
        employee_number="1003",
        groups=("Staff",),
        title="Customer support",
    ),
    DemoEmployee(
        sub="emp-1004",
        email="omar.oconnor@example.com",
        given_name="Omar",
        family_name="O'Connor",
        employee_number="1004",
        groups=("Staff", "Safety", "Managers"),
        title="Plant supervisor",
    ),
    DemoEmployee(
        sub="ctr-2001",
        email="dana.visitor@example.com",
        given_name="Dana",
        family_name="Visitor",
        employee_number="C-2001",
        groups=("Contractors",),
        title="Contractor (the demo's access rule denies her)",
    ),
)

_BY_SUB = {e.sub: e for e in EMPLOYEES}


def find_employee(sub: str) -> DemoEmployee | None:
    """The demo employee with this subject, or None."""
    return _BY_SUB.get(sub)
