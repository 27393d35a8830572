"""Replication on the command line: ``serve --replicate FILE`` and ``durasync links``.

``durasync links [URL]`` prints one line per link of the server at URL (default
``http://127.0.0.1:4437``): name, status, connectivity, mode, lag, dead letters, whether a
reconcile is pending and the remote. ``durasync links pause|resume NAME [URL]`` pauses or
resumes a link; ``durasync links retry NAME [URL]`` retries its dead letters;
``durasync links dead NAME [URL]`` lists them. ``--json`` prints the server's answer as is.
A token for a server started with ``--auth-secret`` comes from ``--token`` or
``DURASYNC_TOKEN``.

Exit codes: 0 success, 1 the server refused or could not be reached, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_links_command", "add_replication_options", "load_replication", "run_links"]

DEFAULT_URL = "http://127.0.0.1:4437"
_ACTIONS = {"pause": "pause", "resume": "resume", "retry": "retry-dead-letters"}


def add_replication_options(parser: argparse.ArgumentParser) -> None:
    """``serve --replicate FILE`` (durasync.replication; docs/replication.md)."""
    parser.add_argument(
        "--replicate",
        type=Path,
        default=None,
        metavar="FILE",
        help=(
            "replicate with other servers as the TOML FILE declares ([[links]] with name, "
            "remote, token, pull, push, rooms; docs/replication.md). SIGHUP reloads it"
        ),
    )


def load_replication(path: Path | None) -> Any:
    """The :class:`~durasync.replication.config.ReplicationConfig` of ``--replicate``, or None.

    Raises:
        LinkConfigError: the file is unreadable or invalid (one line naming the problem).
    """
    if path is None:
        return None
    from durasync.replication.config import load_config

    return load_config(path)


def add_links_command(subparsers: Any) -> None:
    """Register ``durasync links``."""
    parser = subparsers.add_parser(
        "links",
        help="show or control the replication links of a server",
        description=(
            "durasync links [URL]: the links of the server at URL (default "
            f"{DEFAULT_URL}). durasync links pause|resume|retry|dead NAME [URL]: pause or resume "
            "a link, retry or list its dead letters."
        ),
    )
    parser.add_argument("words", nargs="*", metavar="[ACTION NAME] [URL]")
    parser.add_argument("--json", action="store_true", help="print the server's JSON answer")
    parser.add_argument("--token", default=None, help="bearer token (default: $DURASYNC_TOKEN)")
    parser.add_argument("--timeout", type=float, default=10.0, help="request timeout (seconds)")
    parser.set_defaults(func=run_links)


def _fmt_lag(lag: dict[str, Any]) -> str:
    messages = int(lag.get("messages", 0))
    seconds = float(lag.get("seconds", 0.0))
    return f"{messages} / {seconds:.1f}s"


def _table(links: list[dict[str, Any]]) -> str:
    header = (
        "NAME",
        "STATUS",
        "CONNECTIVITY",
        "MODE",
        "LAG (msgs / s)",
        "DEAD",
        "RECONCILE",
        "REMOTE",
    )
    rows = [header]
    for link in links:
        rows.append(
            (
                str(link.get("name")),
                str(link.get("status")),
                str(link.get("connectivity")),
                str(link.get("mode")),
                _fmt_lag(link.get("lag") or {}),
                str(link.get("deadLetters", 0)),
                "needed" if link.get("needsReconcile") else "-",
                str(link.get("remote")),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    )


def run_links(args: argparse.Namespace) -> int:
    """``durasync links``; returns the exit code."""
    import httpx

    words: list[str] = list(args.words)
    action: str | None = None
    name: str | None = None
    if words and (words[0] in _ACTIONS or words[0] == "dead"):
        action = words.pop(0)
        if not words:
            print(f"durasync links {action}: give the link NAME", file=sys.stderr)
            return 2
        name = words.pop(0)
    if len(words) > 1:
        print("durasync links: too many arguments", file=sys.stderr)
        return 2
    url = (words[0] if words else DEFAULT_URL).rstrip("/")
    if not url.startswith(("http://", "https://")):
        print(f"durasync links: not an http(s) URL: {url!r}", file=sys.stderr)
        return 2
    token = args.token or os.environ.get("DURASYNC_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(timeout=args.timeout, headers=headers) as client:
            if action in _ACTIONS:
                assert name is not None
                resp = client.post(f"{url}/v1/replication/links/{name}/{_ACTIONS[action]}")
            elif action == "dead":
                resp = client.get(f"{url}/v1/replication/links/{name}/dead-letters")
            else:
                resp = client.get(f"{url}/v1/replication/links")
    except httpx.HTTPError as exc:
        print(f"durasync links: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code != 200 or not isinstance(body, dict):
        detail = resp.text[:300].strip()
        print(f"durasync links: HTTP {resp.status_code}: {detail}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, indent=2, sort_keys=True))
        return 0
    if action == "dead":
        letters = body.get("deadLetters") or []
        for letter in letters:
            print(
                f"{letter.get('id')}  {letter.get('kind')} {letter.get('key')} at "
                f"{letter.get('item')}: HTTP {letter.get('status')} {letter.get('error')}"
            )
        if not letters:
            print(f"link {name}: no dead letters")
        return 0
    if action == "retry":
        print(f"link {name}: retrying {body.get('retried', 0)} dead letter(s)")
        return 0
    if action is not None:
        print(f"link {name}: {body.get('status')}")
        return 0
    links = body.get("links") or []
    if not links:
        print(f"{url}: no replication links")
        return 0
    print(_table(links))
    return 0
