"""The ``--replicate`` file: parsing, validation (one-line errors) and link identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from durasync.replication.config import (
    MAX_CONFIG_BYTES,
    LinkConfig,
    LinkConfigError,
    load_config,
    parse_config,
    scope_id,
)

GOOD = """
[replication]
reconcile-interval = 60
repair-delays = [0.1, 0.2, 0.3]

[[links]]
name = "to-cloud"
remote = "http://127.0.0.1:4438/"
token = "abc"
pull = ["sensors/", "sensors/"]
push = ["outbox/"]
rooms = ["lab-"]

[[links]]
name = "edge.2"
remote = "https://edge.example:8443/base"
rooms = ["lab-"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "links.toml"
    path.write_text(text)
    return path


def test_a_good_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.settings.reconcile_interval == 60
    assert config.settings.repair_delays == (0.1, 0.2, 0.3)
    cloud = config.link("to-cloud")
    assert cloud is not None
    assert cloud.remote == "http://127.0.0.1:4438"  # trailing slash dropped
    assert cloud.pull == ("sensors/",)  # de-duplicated
    assert cloud.pulls("sensors/a") and not cloud.pulls("outbox/a")
    assert cloud.pushes("outbox/x") and cloud.replicates_room("lab-1")
    assert config.mirror_of("sensors/t") is cloud and config.mirror_of("other") is None


def test_scope_id_is_canonical_and_changes_with_the_scope() -> None:
    a = scope_id({"pull": ["b/", "a/"], "push": [], "rooms": []})
    b = scope_id({"rooms": [], "push": [], "pull": ["a/", "b/", "a/"]})
    assert a == b and len(a) == 43 and "=" not in a
    assert scope_id({"pull": ["a/"], "push": [], "rooms": []}) != a
    one = LinkConfig(name="n", remote="http://h", pull=("a/",))
    two = LinkConfig(name="n", remote="http://h", pull=("a/", "b/"))
    other_remote = LinkConfig(name="n", remote="http://h2", pull=("a/",))
    assert one.scope_id != two.scope_id
    assert len({one.link_id, two.link_id, other_remote.link_id}) == 3


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[[links]]\nname='a'\nremote='http://h'\n", "at least one of pull, push, rooms"),
        ("[[links]]\nname='a b'\nremote='http://h'\npull=['x/']\n", "name must be"),
        ("[[links]]\nname='a'\npull=['x/']\n", "remote is required"),
        ("[[links]]\nname='a'\nremote='ftp://h'\npull=['x/']\n", "http:// or https://"),
        ("[[links]]\nname='a'\nremote='http://h?x=1'\npull=['x/']\n", "query"),
        ("[[links]]\nname='a'\nremote='http://u:p@h'\npull=['x/']\n", "credentials"),
        ("[[links]]\nname='a'\nremote='http://h:99999'\npull=['x/']\n", "invalid port"),
        ("[[links]]\nname='a'\nremote='http://h'\npull=['__rooms/']\n", "reserved"),
        ("[[links]]\nname='a'\nremote='http://h'\npull=['/x']\n", "must not start"),
        ("[[links]]\nname='a'\nremote='http://h'\npull=['a//b/']\n", "empty"),
        ("[[links]]\nname='a'\nremote='http://h'\npull=['x/']\npush=['x/y']\n", "overlaps"),
        ("[[links]]\nname='a'\nremote='http://h'\nrooms=['a/b']\n", "room name prefix"),
        ("[[links]]\nname='a'\nremote='http://h'\npull='x/'\n", "list of strings"),
        ("[[links]]\nname='a'\nremote='http://h'\npull=['x/']\ncolour=1\n", "unknown key"),
        ("[[links]]\nname='a'\nremote='http://h'\npull=['x/']\ntoken=''\n", "token"),
        (
            "[[links]]\nname='a'\nremote='http://h'\npull=['x/']\n"
            "[[links]]\nname='a'\nremote='http://g'\npull=['y/']\n",
            "used twice",
        ),
        (
            "[[links]]\nname='a'\nremote='http://h'\npull=['x/']\n"
            "[[links]]\nname='b'\nremote='http://g'\npull=['x/y/']\n",
            "exactly one source",
        ),
        (
            "[[links]]\nname='a'\nremote='http://h'\npull=['x/']\n"
            "[[links]]\nname='b'\nremote='http://h'\npush=['x/1']\n",
            "back to the server",
        ),
        ("links = 3\n", "array of tables"),
        ("[replication]\nreconcile-interval = -1\n", "reconcile_interval"),
        ("[replication]\nmax-in-flight = 1.5\n", "integer"),
        ("[replication]\nnope = 1\n", "unknown key"),
        ("[other]\n", "unknown top-level key"),
    ],
)
def test_bad_files_give_one_line_naming_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(LinkConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert needle in message and "\n" not in message and str(tmp_path) in message


def test_unreadable_too_large_and_not_toml(tmp_path: Path) -> None:
    with pytest.raises(LinkConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(LinkConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[[links]\n"))
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(LinkConfigError, match="larger than"):
        load_config(big)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(LinkConfigError, match="UTF-8"):
        load_config(binary)


def test_rooms_may_overlap_across_links_and_empty_file_is_no_links() -> None:
    config = parse_config(
        {
            "links": [
                {"name": "a", "remote": "http://a", "rooms": ["lab-"]},
                {"name": "b", "remote": "http://b", "rooms": ["lab-"], "push": ["x/"]},
                {"name": "c", "remote": "http://c", "push": ["x/"]},
            ]
        }
    )
    assert [link.name for link in config.links] == ["a", "b", "c"]
    assert parse_config({}).links == ()
