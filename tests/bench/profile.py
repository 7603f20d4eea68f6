"""Profile the gateway under load with py-spy (benchmark-only; ``pip install py-spy`` first).

    python -m tests.bench.profile [--kind oidc|saml|click] [--seconds 20] [--out DIR]

Starts the benchmark stack, provisions employees, then records the gateway process with
``py-spy record`` while returning sign-ins of ``--kind`` run. Writes a speedscope JSON and a
flat "top functions" text (self and total samples) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.bench.loadgen import Job, drive
from tests.bench.stack import BenchStack, app_names


def top_functions(speedscope: Path, limit: int = 40) -> str:
    """Self and inclusive sample shares per function from a py-spy speedscope file."""
    data = json.loads(speedscope.read_text())
    frames = data["shared"]["frames"]
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    count = 0
    for profile in data["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            count += weight
            names = [
                f"{frames[i]['name']} ({Path(frames[i].get('file', '?')).name}:"
                f"{frames[i].get('line', 0)})"
                for i in stack
            ]
            if names:
                own[names[-1]] += weight
            for name in set(names):
                total[name] += weight
    lines = [f"{count} samples", "", "self%  function"]
    lines += [f"{100 * n / count:5.1f}  {name}" for name, n in own.most_common(limit)]
    lines += ["", "total%  function"]
    lines += [f"{100 * n / count:5.1f}  {name}" for name, n in total.most_common(limit)]
    return "\n".join(lines)


# (label, substrings of "file:function"). The SPECIFIC ones win when any frame of a sample
# matches (first listed first); otherwise the leaf-most frame matching a GENERIC one decides.
SPECIFIC: list[tuple[str, tuple[str, ...]]] = [
    ("logging (access log, audit, events)", ("/logging/",)),
    ("SAML: signature verify (xmlsec)", ("saml_signature.py:verify_signature",)),
    ("SAML: schema validation", ("saml_xml.py:validate_schema",)),
    ("SAML: rest of validate_response", ("saml_checks.py:",)),
    ("OIDC: ID token verify (joserfc)", ("jwks.py:verify_id_token",)),
    ("outgoing HTTP client (httpx/httpcore/anyio)", ("/httpx/", "/httpcore/", "/anyio/")),
    ("session cookie (itsdangerous)", ("/itsdangerous/",)),
]
GENERIC: list[tuple[str, tuple[str, ...]]] = [
    ("gateway code (handlers, auth, connectors, store)", ("/gateway/",)),
    ("HTTP server (uvicorn h11, starlette)", ("/uvicorn/", "/h11/", "/starlette/")),
    ("event loop, sockets", ("/asyncio/", "selectors.py")),
]


def _label(names: list[str]) -> str:
    for label, marks in SPECIFIC:
        if any(m in n for n in names for m in marks):
            return label
    for name in reversed(names):  # leaf first
        for label, marks in GENERIC:
            if any(m in name for m in marks):
                return label
    return "other"


def breakdown(speedscope: Path) -> list[tuple[str, float]]:
    """Share of samples per category (see SPECIFIC and GENERIC)."""
    data = json.loads(speedscope.read_text())
    frames = [f"{f.get('file', '?')}:{f['name']}" for f in data["shared"]["frames"]]
    shares: Counter[str] = Counter()
    count = 0.0
    for profile in data["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            count += weight
            shares[_label([frames[i] for i in stack])] += weight
    return [(label, 100 * n / count) for label, n in shares.most_common()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=("oidc", "saml", "click"), default="oidc")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--out", default="bench-profile")
    args = parser.parse_args()
    beside = Path(sys.executable).parent / "py-spy"
    spy = str(beside) if beside.exists() else shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stack = BenchStack(workers=1, store="memory")
    stack.start()
    try:
        stack.set_rate_limits(1_000_000_000)
        proto = "saml" if args.kind == "saml" else "oidc"
        jobs = [
            Job(
                proto,
                app_names("skyprep", stack.replicas)[i % stack.replicas],
                "skyprep",
                f"bench-{i}",
            )
            for i in range(1, 201)
        ]
        samples, _ = drive(stack.urls, jobs, args.concurrency)
        if args.kind == "click":
            jobs = [Job("click", s.app, "skyprep", s.sub, s.session) for s in samples if s.ok]
        assert stack.gateway_tree is not None
        record = out / f"{args.kind}.speedscope.json"
        spy_proc = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(stack.gateway_tree.root),
                "--duration",
                str(int(args.seconds)),
                "--rate",
                "250",
                "--format",
                "speedscope",
                "--output",
                str(record),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        samples, _ = drive(stack.urls, jobs, args.concurrency, duration=args.seconds)
        result = [len(samples)]
        spy_proc.wait(timeout=args.seconds + 60)
        text = "\n".join(f"{share:5.1f}%  {label}" for label, share in breakdown(record))
        text += "\n\n" + top_functions(record)
        (out / f"{args.kind}.top.txt").write_text(text)
        print(f"{result[0]} sign-ins while recording\n{text}")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
