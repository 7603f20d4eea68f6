"""A scripted user agent for end-to-end flows: follows redirects with a cookie jar and
submits the forms a person would click (the demo IdPs' "choose an employee" pages)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urljoin

import httpx
from lxml import html


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str]


def forms_of(response: httpx.Response) -> list[Form]:
    doc = html.fromstring(response.text)
    found = []
    for form in doc.forms:
        fields = {
            i.get("name"): i.get("value", "")
            for i in form.inputs
            if i.get("name")
            and i.tag == "input"
            and i.get("type") in ("hidden", "text", "password", None)
        }
        found.append(
            Form(
                urljoin(str(response.url), form.get("action") or ""),
                (form.get("method") or "get").lower(),
                fields,
            )
        )
    return found


async def choose_employee(
    client: httpx.AsyncClient, page: httpx.Response, sub: str
) -> httpx.Response:
    """Click the employee's button on a demo IdP page; follow redirects (and the SAML
    auto-post page, whose script a browser would run) to wherever they lead."""
    assert "Choose a demo employee" in page.text, page.text[:500]
    (form,) = forms_of(page)
    response = await client.post(
        form.action, data={**form.fields, "sub": sub}, follow_redirects=True
    )
    if "SAMLResponse" in response.text:
        (post,) = [f for f in forms_of(response) if "SAMLResponse" in f.fields]
        response = await client.post(post.action, data=post.fields, follow_redirects=True)
    return response


async def sign_in(client: httpx.AsyncClient, start_url: str, sub: str) -> httpx.Response:
    """Open ``start_url`` on the gateway, pick ``sub`` at the IdP, return the final page."""
    page = await client.get(start_url, follow_redirects=True)
    return await choose_employee(client, page, sub)


def hosts_visited(response: httpx.Response) -> list[str]:
    return [r.url.netloc.decode() for r in (*response.history, response)]
