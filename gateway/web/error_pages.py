"""What each error page says: one entry per page kind (``page`` on each class in
:mod:`gateway.errors`): a heading, one sentence of what happened, what to do next, and the log
level of the condition (expected ones, like the queue or a refused account, are not ERROR).

Texts are English message ids, translated when the page is rendered (``N_`` only marks them
for extraction into the catalogues; see :mod:`gateway.web.i18n`). ``%(app)s`` is the app's
display name; a heading that names the app has a plain variant for when it is not known.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

# What the page offers next (rendered by error.html):
#   start     a "Start again" button: /login/{app} when the app is known, else the start page
#   support   "contact <support> and quote the reference"
#   access    "if you need access, contact <support>"
#   lms_admin "contact your training administrator and quote the reference"
#   retry     "please try again in a few minutes" (+ Start again)
#   minute    "please try again in a minute" (+ Start again)
#   home      a link to the start page
#   open_app  a link to the app (signed-in employees: their LMS home page)
#   sign_out  a link to the sign-out page
Action = Literal[
    "start", "support", "access", "lms_admin", "retry", "minute", "home", "open_app", "sign_out"
]


def N_(message: str) -> str:
    """Mark ``message`` for the catalogues; it is translated when the page is rendered."""
    return message


@dataclass(frozen=True, slots=True)
class PageKind:
    heading: str
    what: str
    actions: tuple[Action, ...]
    level: int = logging.WARNING
    heading_app: str | None = None  # with %(app)s, used when the app is known


KINDS: dict[str, PageKind] = {
    "internal": PageKind(
        N_("Something went wrong"),
        N_("Something went wrong on our side. We have logged it."),
        ("retry", "support"),
        logging.ERROR,
    ),
    "bad_link": PageKind(
        N_("This link is not valid"),
        N_("The address you opened is incomplete or has been changed."),
        ("start",),
    ),
    "unsafe_target": PageKind(
        N_("This destination is not allowed"),
        N_("The page you asked to go to is not allowed as a destination."),
        ("start", "support"),
    ),
    "sign_out_failed": PageKind(
        N_("Sign-out did not finish"),
        N_("For your safety, sign-out only works from this site's own sign-out page."),
        ("sign_out",),
    ),
    "sign_in_failed": PageKind(
        N_("Sign-in could not be completed"),
        N_("The answer from your sign-in service could not be verified."),
        ("start", "support"),
    ),
    "sign_in_expired": PageKind(
        N_("Your sign-in has expired"),
        N_(
            "This sign-in took too long, was already used, or was started in another "
            "browser. Please start again."
        ),
        ("start",),
    ),
    "idp_rejected": PageKind(
        N_("Sign-in was not completed"),
        N_("Your sign-in service ended the sign-in without signing you in."),
        ("start", "support"),
    ),
    "idp_unavailable": PageKind(
        N_("Your sign-in service is not reachable"),
        N_("We could not reach your company's sign-in service just now."),
        ("retry", "support"),
        logging.ERROR,
    ),
    "idp_not_authoritative": PageKind(
        N_("This sign-in service cannot sign you in here"),
        N_("The sign-in service you chose does not manage accounts with your e-mail address."),
        ("start", "support"),
        logging.INFO,
    ),
    "access_denied": PageKind(
        N_("You do not have access"),
        N_("Your account is not allowed to use this application."),
        ("access",),
        logging.INFO,
        N_("You do not have access to %(app)s"),
    ),
    "not_found": PageKind(
        N_("Page not found"),
        N_("We could not find what you asked for."),
        ("home",),
        logging.INFO,
    ),
    "method_not_allowed": PageKind(
        N_("This page cannot be used like this"),
        N_("The address exists, but not for this kind of request."),
        ("home",),
        logging.INFO,
    ),
    "lesson_not_found": PageKind(
        N_("Lesson not found"),
        N_("This lesson is not assigned to you, or it no longer exists."),
        ("open_app",),
        logging.INFO,
    ),
    "credential": PageKind(
        N_("Not allowed"),
        N_("This address is for connected systems, not for browsers."),
        ("home",),
    ),
    "conflict": PageKind(
        N_("Nothing left to do here"),
        N_("This has already been completed or was changed in the meantime."),
        ("open_app",),
        logging.INFO,
    ),
    "gone": PageKind(
        N_("No longer available"),
        N_("This item was cancelled or removed."),
        ("open_app",),
        logging.INFO,
    ),
    "lms_error": PageKind(
        N_("The training system did not answer as expected"),
        N_("We could not finish opening your training."),
        ("retry", "support"),
        logging.ERROR,
        N_("%(app)s did not answer as expected"),
    ),
    "lms_unavailable": PageKind(
        N_("The training system is not available"),
        N_("It did not answer in time or is down for the moment."),
        ("minute", "support"),
        logging.ERROR,
        N_("%(app)s is not available right now"),
    ),
    "lms_busy": PageKind(
        N_("The training system is busy"),
        N_("It asked us to slow down for a moment."),
        ("minute",),
        logging.WARNING,
        N_("%(app)s is busy"),
    ),
    "account_inactive": PageKind(
        N_("Your training account is deactivated"),
        N_("Your account in the training system has been switched off."),
        ("lms_admin",),
        logging.INFO,
    ),
    "privileged_account": PageKind(
        N_("Administrator accounts cannot sign in here"),
        N_(
            "This account has administrator rights in the training system, so single "
            "sign-on does not open it."
        ),
        ("lms_admin",),
    ),
    "ambiguous_account": PageKind(
        N_("More than one training account matches you"),
        N_("The training system has several accounts that could be yours."),
        ("lms_admin",),
    ),
    "too_many_logins": PageKind(
        N_("Too many sign-ins right now"),
        N_("Too many sign-ins are being started from your network right now."),
        ("minute",),
    ),
    "store_unavailable": PageKind(
        N_("Sign-in is temporarily unavailable"),
        N_("A service the sign-in relies on cannot be reached."),
        ("retry",),
        logging.ERROR,
    ),
    # Rendered by their own templates (queue.html, busy.html); listed for the log level.
    "queue": PageKind(
        N_("You're in the queue"), N_("Many people are signing in right now."), (), logging.INFO
    ),
    "busy": PageKind(N_("Just a moment"), N_("You have just signed in."), (), logging.INFO),
}


def kind_of(name: str) -> PageKind:
    """The page kind ``name`` (an unknown name, e.g. a new class's typo: the generic page)."""
    return KINDS.get(name, KINDS["internal"])
