"""How a SceneGraph shows itself to people: a short repr and an indented tree."""

from __future__ import annotations

from durasync.crdt import SceneGraph, format_tree

from .crdt_helpers import msg, op, root_msg


def sample() -> SceneGraph:
    g = SceneGraph()
    g.apply_message(root_msg("a", 1, "cube", "lamp"))
    g.apply_message(
        msg(
            "a",
            2,
            op("number.set", "cube", "opacity", 0.5),
            op("vector3.set", "cube", "position", [1, 0, 0]),
            op("node.insert", "cube", "children", {"key": "label", "tag": "Text", "name": "L"}),
            op("node.remove", "scene", "children", "lamp"),
        )
    )
    return g


def test_repr_is_one_short_line() -> None:
    assert repr(sample()) == "<SceneGraph root='scene' nodes=3 deleted=1 texts=0>"
    assert repr(SceneGraph()) == "<SceneGraph root='' nodes=0 deleted=0 texts=0>"


def test_print_shows_the_tree() -> None:
    g = sample()
    assert str(g) == format_tree(g)
    assert str(g).splitlines() == [
        'scene <Scene> "S"',
        "  cube <Mesh> opacity=0.5 position=[1,0,0]",
        '    label <Text> "L"',
    ]
    full = format_tree(g, live=False).splitlines()
    assert full[-1] == "lamp <Mesh> (deleted)"  # removed from its parent: a tree of its own
    assert str(SceneGraph()) == "(empty graph)"
