"""``python -m durasync.crdt replay FILE.jsonl``: print a journal's graph as canonical JSON.

See shared/reference/crdt-canonical-json.md for the output format. Exit status: 0 on success,
2 on unreadable or malformed input (the message names the line and the field).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from durasync.crdt.errors import CRDTValidationError
from durasync.crdt.messages import Message, decode_message
from durasync.crdt.replica import Replica

__all__ = ["main", "read_jsonl"]


def read_jsonl(text: str) -> list[Message]:
    """Parse one message per line; blank lines and ``#`` / ``//`` comment lines are skipped.

    Raises :class:`CRDTValidationError` whose field starts with ``line N``.
    """
    out: list[Message] = []
    for i, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith(("#", "//")):
            continue
        try:
            out.append(decode_message(s))
        except CRDTValidationError as exc:
            raise CRDTValidationError(f"line {i}: {exc.field}", exc.message) from None
    return out


def replay(messages: list[Message], *, order: str) -> Replica:
    """Fold ``messages``: ``order="file"`` keeps file order (as a server's sequence would),
    ``"canonical"`` sorts by (lamportTime, client). Duplicate ids are applied once."""
    r = Replica("replay")
    if order == "file":
        r.receive_many(messages, list(range(len(messages))), validate=False)
    else:
        r.receive_many(messages, validate=False)
    return r


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m durasync.crdt",
        description="Tools for durasync's scene-graph CRDT.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    rp = sub.add_parser(
        "replay",
        help="fold a JSONL journal and print the graph as canonical JSON",
        description=(
            "Read one CRDTMessage per line (long or compact field names, or a wire wrapper "
            '{"mtype":"crdt"|"broadcast","msg":{...}}; blank, # and // lines are skipped), fold '
            "them into a scene graph and print it as canonical JSON "
            "(shared/reference/crdt-canonical-json.md). Messages with an id already seen are "
            "skipped. Exit status 2 on bad input."
        ),
    )
    rp.add_argument("file", metavar="FILE.jsonl", help="journal to replay ('-' for stdin)")
    rp.add_argument(
        "--order",
        choices=("file", "canonical"),
        default="file",
        help="apply in file order like a server's sequence (default), or sort by "
        "(lamportTime, client) first",
    )
    rp.add_argument(
        "--drop-tombstones",
        action="store_true",
        help="live view: leave deleted nodes out (and out of every children list)",
    )
    rp.add_argument("--with-meta", action="store_true", help='add each node\'s LWW stamps as "lww"')
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8") as f:
                text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    try:
        msgs = read_jsonl(text)
    except CRDTValidationError as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return 2
    r = replay(msgs, order=args.order)
    sys.stdout.write(r.dump(live=args.drop_tombstones, with_meta=args.with_meta) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
