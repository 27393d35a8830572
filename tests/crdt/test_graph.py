"""Per-otype semantics in one given order (vuer-rtc-semantics.md §3), defaults, tombstones."""

from __future__ import annotations

import math
from typing import Any

import pytest

from durasync.crdt import SceneGraph, canonical_json
from durasync.crdt.messages import validate_message

from .crdt_helpers import msg, op, root_msg


def graph(*children: str) -> SceneGraph:
    g = SceneGraph()
    g.apply_message(root_msg("a", 1, *(children or ("n",))))
    return g


def run(g: SceneGraph, *ops: Any, client: str = "a", lt: int = 5) -> None:
    m = msg(client, lt, *ops)
    validate_message(m)
    g.apply_message(m)


def after(ot: str, value: Any, start: Any = None, **extra: Any) -> Any:
    g = graph()
    if start is not None:
        g.nodes["n"].props["p"] = start
    run(g, op(ot, "n", "p", value, **extra))
    return g.get("n", "p")


# -- number ----------


def test_number_ops_and_defaults() -> None:
    assert after("number.add", 3) == 3
    assert after("number.add", 3, 4) == 7
    assert after("number.multiply", 3) == 3
    assert after("number.multiply", 3, 4) == 12
    assert after("number.min", 3) == 3
    assert after("number.min", 3, 1) == 1
    assert after("number.max", -3) == -3
    assert after("number.max", 3, 5) == 5
    assert after("number.set", 2.5, 9) == 2.5
    # wrong current type falls back to the default instead of crashing
    assert after("number.add", 1, "x") == 1


def test_lww_rule() -> None:
    g = graph()
    run(g, op("number.set", "n", "p", 1), client="b", lt=5)
    run(g, op("number.set", "n", "p", 2), client="a", lt=5)  # tie, lower client loses
    assert g.get("n", "p") == 1
    run(g, op("number.set", "n", "p", 3), client="c", lt=5)  # tie, higher client wins
    assert g.get("n", "p") == 3
    run(g, op("number.set", "n", "p", 4), client="z", lt=4)  # stale
    assert g.get("n", "p") == 3
    run(g, op("number.set", "n", "p", 5), client="a", lt=6)
    assert g.get("n", "p") == 5
    assert g.nodes["n"].lww["p"] == (6, "a")
    # insert-time props carry no stamp: any set wins
    g2 = SceneGraph()
    g2.apply_message(msg("z", 9, op("node.insert", "", "children", {"key": "n", "opacity": 1})))
    run(g2, op("number.set", "n", "opacity", 0.5), client="a", lt=1)
    assert g2.get("n", "opacity") == 0.5


def test_add_after_set_stacks_and_set_after_add_wipes() -> None:
    g = graph()
    run(g, op("number.set", "n", "p", 10), lt=5)
    run(g, op("number.add", "n", "p", 1), lt=6)
    assert g.get("n", "p") == 11
    run(g, op("number.set", "n", "p", 0), lt=7)
    assert g.get("n", "p") == 0


# -- vectors, rotations ----------


def test_vector3_ops() -> None:
    assert after("vector3.add", [1, 2, 3]) == [1, 2, 3]
    assert after("vector3.add", [1, 2, 3], [1, 1, 1]) == [2, 3, 4]
    assert after("vector3.multiply", [2, 3, 4]) == [2, 3, 4]
    assert after("vector3.multiply", [2, 3, 4], [1, 2, 3]) == [2, 6, 12]
    assert after("vector3.set", [7, 8, 9], [0, 0, 0]) == [7, 8, 9]
    assert after("euler.add", [0.1, 0, 0], [0.2, 0, 1]) == pytest.approx([0.3, 0, 1])
    assert after("euler.set", [1, 2, 3]) == [1, 2, 3]


def test_apply_quaternion_rotates() -> None:
    s = math.sqrt(0.5)
    # 90° about Z maps x to y
    assert after("vector3.applyQuaternion", [0, 0, s, s], [1, 0, 0]) == pytest.approx([0, 1, 0])
    assert after("vector3.applyQuaternion", [0, 0, s, s]) == [0, 0, 0]


@pytest.mark.parametrize("order", ["XYZ", "YXZ", "ZXY", "ZYX", "YZX", "XZY"])
def test_apply_euler_single_axis_agrees_for_every_order(order: str) -> None:
    # a rotation about one axis does not depend on the order
    assert after(
        "vector3.applyEuler", [0, 0, math.pi / 2], [1, 0, 0], order=order
    ) == pytest.approx([0, 1, 0])
    assert after(
        "vector3.applyEuler", [math.pi / 2, 0, 0], [0, 1, 0], order=order
    ) == pytest.approx([0, 0, 1])


def test_apply_euler_order_and_intrinsic() -> None:
    v = [1, 0, 0]
    angles = [math.pi / 2, 0, math.pi / 2]
    xyz = after("vector3.applyEuler", angles, v, order="XYZ")
    zyx = after("vector3.applyEuler", angles, v, order="ZYX")
    extrinsic_zyx = after("vector3.applyEuler", angles, v, order="ZYX", intrinsic=False)
    assert xyz != pytest.approx(zyx)
    assert extrinsic_zyx == pytest.approx(xyz)  # extrinsic reverses the order string
    assert after("vector3.applyEuler", angles, v) == pytest.approx(xyz)  # default XYZ


def test_quaternion_ops() -> None:
    s = math.sqrt(0.5)
    assert after("quaternion.multiply", [0, 0, s, s]) == pytest.approx([0, 0, s, s])
    assert after("quaternion.multiply", [0, 0, s, s], [0, 0, s, s]) == pytest.approx([0, 0, 1, 0])
    # current on the left: i ⊗ j = k, j ⊗ i = -k
    assert after("quaternion.multiply", [0, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx([0, 0, 1, 0])
    assert after("quaternion.set", [0, 0, 0, 1], [1, 0, 0, 0]) == [0, 0, 0, 1]


# -- color, string, boolean ----------


def test_color_ops() -> None:
    assert after("color.set", "#ff0000") == "#ff0000"
    assert after("color.blend", "#ff0000") == "#ff0000"  # absent: current = value
    assert after("color.blend", "#000000", "#ffffff") == "#808080"  # 127.5 rounds half-up
    assert after("color.blend", "#010101", "#000000") == "#010101"  # 0.5 -> 1 (JS), not 0
    assert after("color.blend", "#0000FF", "#FF0000") == "#800080"  # lower-case output


def test_string_ops() -> None:
    assert after("string.set", "x", "y") == "x"
    assert after("string.concat", "b") == "b"
    assert after("string.concat", "b", "a") == "ab"
    assert after("string.concat", "b", "a", separator=", ") == "a, b"
    assert after("string.concat", "b", "", separator=", ") == "b"  # falsy current: v


def test_boolean_ops() -> None:
    assert after("boolean.or", False) is False
    assert after("boolean.or", True) is True
    assert after("boolean.or", False, True) is True
    assert after("boolean.and", True) is True
    assert after("boolean.and", True, False) is False
    assert after("boolean.set", False, True) is False


# -- arrays, objects ----------


def test_array_ops() -> None:
    assert after("array.push", 1) == [1]
    assert after("array.push", {"a": 1}, [0]) == [0, {"a": 1}]
    assert after("array.union", [3, 1, 4], [1, 2]) == [1, 2, 3, 4]
    assert after("array.union", [[1], [1], 2]) == [[1], 2]
    assert after("array.remove", 1, [1, 2, 1, 3]) == [2, 3]
    assert after("array.remove", 1) == []
    assert after("array.set", [5], [1, 2]) == [5]
    assert after("array.move", None, [0, 1, 2, 3], **{"from": 0, "to": 2}) == [1, 2, 0, 3]
    assert after("array.move", None, [0, 1, 2], **{"from": 2, "to": 99}) == [0, 1, 2]
    assert after("array.move", None, [0, 1, 2], **{"from": 5, "to": 0}) == [0, 1, 2]


def test_values_are_not_shared_with_ops() -> None:
    g = graph()
    v = [1, 2, 3]
    run(g, op("vector3.set", "n", "p", v))
    v[0] = 99
    assert g.get("n", "p") == [1, 2, 3]


def test_object_ops() -> None:
    assert after("object.set", {"a": 1}, {"b": 2}) == {"a": 1}
    assert after("object.merge", {"a": 1}) == {"a": 1}
    assert after("object.merge", {"a": 1, "b": 3}, {"b": 2, "c": 0}) == {"a": 1, "b": 3, "c": 0}
    g = graph()
    run(g, op("object.merge", "n", ".", {"color": "red", "key": "x", "tag": "T", "name": "nm"}))
    n = g.nodes["n"]
    assert n.props == {"color": "red", "name": "nm"}  # name shadows, key/tag skipped
    assert n.key == "n" and n.tag == "Mesh"


# -- nodes ----------


def test_insert_root_children_order_and_idempotence() -> None:
    g = SceneGraph()
    run(g, op("node.insert", "", "children", {"key": "s", "tag": "Scene"}), lt=1)
    assert g.root_key == "s"
    g.apply_message(msg("a", 2, op("node.insert", "s", "children", {"key": "b"}), ts=50))
    g.apply_message(msg("a", 3, op("node.insert", "s", "children", {"key": "a"}), ts=60))
    g.apply_message(msg("a", 4, op("node.insert", "s", "children", {"key": "c"}), ts=10))
    assert g.nodes["s"].children == ["c", "b", "a"]  # by (createdAt, key)
    g.apply_message(msg("b", 5, op("node.insert", "s", "children", {"key": "b", "tag": "X"}), ts=1))
    assert g.nodes["b"].tag == ""  # idempotent, first insert kept
    assert g.nodes["s"].children == ["c", "b", "a"]
    assert g.root_key == "s"


def test_insert_props_and_children_field() -> None:
    g = graph()
    run(
        g,
        op(
            "node.insert",
            "scene",
            "children",
            {"key": "m", "tag": "Mesh", "name": "M", "children": ["q"], "pos": [1, 2, 3]},
        ),
    )
    n = g.nodes["m"]
    assert (n.tag, n.name, n.children, n.props) == ("Mesh", "M", ["q"], {"pos": [1, 2, 3]})
    assert n.lww == {}


def test_orphan_and_no_resurrection() -> None:
    g = graph()
    run(g, op("node.insert", "missing", "children", {"key": "o"}))
    assert "o" in g.nodes and g.nodes["o"].parent is None
    assert all("o" not in n.children for n in g.nodes.values())
    run(g, op("node.remove", "scene", "children", "n"))
    assert g.nodes["n"].deleted
    assert "n" not in g.nodes["scene"].children
    run(g, op("node.insert", "scene", "children", {"key": "n", "tag": "New"}), lt=9)
    assert g.nodes["n"].deleted and g.nodes["n"].tag == "Mesh"


def test_ops_on_tombstoned_or_missing_nodes_are_ignored() -> None:
    g = graph()
    run(g, op("node.remove", "scene", "children", "n"))
    for o in (
        op("number.set", "n", "p", 1),
        op("number.add", "n", "p", 1),
        op("vector3.add", "n", "v", [1, 1, 1]),
        op("array.push", "n", "a", 1),
        op("object.merge", "n", ".", {"x": 1}),
        op("number.add", "ghost", "p", 1),
        op("node.move", "scene", "children", {"nodeKey": "n", "newParent": "scene"}),
    ):
        run(g, o)
    assert g.nodes["n"].props == {}
    assert "ghost" not in g.nodes
    assert canonical_json(g, live=True).count('"n"') == 0


def test_remove_unknown_node_is_a_no_op() -> None:
    g = graph()
    before = canonical_json(g)
    run(g, op("node.remove", "scene", "children", "ghost"))
    assert canonical_json(g) == before


def test_move_reparents_and_parent_pointer_is_lww() -> None:
    g = graph("g1", "g2", "c")
    run(
        g,
        op("node.move", "scene", "children", {"nodeKey": "c", "newParent": "g1"}),
        client="a",
        lt=5,
    )
    run(
        g,
        op("node.move", "scene", "children", {"nodeKey": "c", "newParent": "g2"}),
        client="b",
        lt=5,
    )
    # both name the *old* parent "scene"; the node must end up under exactly one parent
    holders = [k for k, n in g.nodes.items() if "c" in n.children]
    assert holders == ["g2"]
    # an older move loses against the newer parent stamp
    run(g, op("node.move", "g2", "children", {"nodeKey": "c", "newParent": "g1"}), client="a", lt=4)
    assert [k for k, n in g.nodes.items() if "c" in n.children] == ["g2"]
    assert g.nodes["c"].parent == "g2"


def test_move_refuses_cycles() -> None:
    g = graph("a", "b")
    run(g, op("node.move", "scene", "children", {"nodeKey": "b", "newParent": "a"}), lt=5)
    run(g, op("node.move", "scene", "children", {"nodeKey": "a", "newParent": "b"}), lt=6)
    assert g.nodes["a"].parent == "scene" and g.nodes["b"].parent == "a"
    run(g, op("node.move", "scene", "children", {"nodeKey": "a", "newParent": "a"}), lt=7)
    assert g.nodes["a"].parent == "scene"


def test_remove_unlists_from_actual_parent() -> None:
    g = graph("g1", "c")
    run(g, op("node.move", "scene", "children", {"nodeKey": "c", "newParent": "g1"}), lt=5)
    run(g, op("node.remove", "scene", "children", "c"), lt=6)  # names a stale parent
    assert "c" not in g.nodes["g1"].children


# -- text ----------


def test_text_ops_render_visible_string() -> None:
    g = graph()
    run(g, op("text.init", "n", "t"), lt=2)
    assert g.get("n", "t") == ""
    run(g, op("text.insert", "n", "t", [None, "hello"], id="b:0", seq=1, ts=1), lt=3)
    run(g, op("text.insert", "n", "t", ["b:4", "!"], id="b:5", seq=2, ts=2), lt=4)
    assert g.get("n", "t") == "hello!"
    run(g, op("text.delete", "n", "t", rm=[["b:0", 1]]), lt=5)
    assert g.get("n", "t") == "ello!"
    run(g, op("text.replace", "n", "t", ["b:4", "O"], rm=[["b:4", 1]], id="c:0", seq=3, ts=3), lt=6)
    assert g.get("n", "t") == "ellO!"
    assert '"t":"ellO!"' in canonical_json(g)
    # idempotent re-application
    run(g, op("text.insert", "n", "t", [None, "hello"], id="b:0", seq=1, ts=1), lt=3)
    assert g.get("n", "t") == "ellO!"


def test_text_init_with_value_is_deterministic_and_idempotent() -> None:
    g1, g2 = graph(), graph()
    for g in (g1, g2):
        run(g, op("text.init", "n", "t", "abc"), client="z", lt=2)
        run(g, op("text.init", "n", "t", "abc"), client="z", lt=2)
    assert g1.get("n", "t") == g2.get("n", "t") == "abc"


def test_string_set_on_text_path_until_next_text_op() -> None:
    g = graph()
    run(g, op("text.insert", "n", "t", [None, "ab"], id="b:0", seq=1, ts=1), lt=2)
    run(g, op("string.set", "n", "t", "zz"), lt=3)
    assert g.get("n", "t") == "zz"
    run(g, op("string.concat", "n", "t", "!"), lt=4)
    assert g.get("n", "t") == "zz!"
    run(g, op("text.insert", "n", "t", ["b:1", "c"], id="b:2", seq=2, ts=2), lt=5)
    assert g.get("n", "t") == "abc"


def test_text_ops_on_tombstoned_or_missing_nodes_are_ignored() -> None:
    """Like every property op (docs/crdt.md "Otypes"): the full view keeps the text as it was
    when the node was removed, and a missing node gets no doc."""
    g = graph()
    run(g, op("text.insert", "n", "t", [None, "ab"], id="b:0", seq=1, ts=1), lt=2)
    run(g, op("node.remove", "scene", "children", "n"), lt=3)
    run(g, op("text.insert", "n", "t", ["b:1", "c"], id="b:2", seq=2, ts=2), lt=4)
    run(g, op("text.delete", "n", "t", rm=[["b:0", 1]]), lt=5)
    run(g, op("text.replace", "n", "t", ["b:1", "X"], rm=[["b:1", 1]], id="c:0", seq=3, ts=3), lt=6)
    run(g, op("text.init", "n", "u", "zz"), lt=7)
    assert g.get("n", "t") == "ab"
    assert "u" not in g.nodes["n"].props and ("n", "u") not in g.texts
    assert '"props":{"t":"ab"}' in canonical_json(g)
    run(g, op("text.init", "ghost", "t", "x"), lt=8)
    run(g, op("text.insert", "ghost", "t", [None, "y"], id="d:0", seq=1, ts=1), lt=9)
    assert ("ghost", "t") not in g.texts
    run(g, op("node.insert", "scene", "children", {"key": "ghost"}), lt=10)
    assert g.get("ghost", "t") is None


def test_text_delete_without_doc_is_ignored() -> None:
    g = graph()
    run(g, op("text.delete", "n", "t", rm=[["q:0", 1]]))
    assert "t" not in g.nodes["n"].props


# -- copy-on-write ----------


def test_writes_after_checkpoint_never_touch_the_checkpoint() -> None:
    g = SceneGraph(cow=True)
    g.apply_message(root_msg("a", 1, "n", "m"))
    run(g, op("vector3.set", "n", "p", [1, 2, 3]), lt=2)
    before = canonical_json(g)
    cp = g.checkpoint()
    frozen = dict(cp.nodes)
    run(
        g,
        op("vector3.add", "n", "p", [1, 1, 1]),
        op("number.set", "n", "q", 5),
        op("node.insert", "root", "children", {"key": "x", "tag": "Mesh"}),
        op("node.move", "root", "children", {"nodeKey": "m", "newParent": "x"}),
        op("node.remove", "root", "children", "n"),
        lt=3,
    )
    assert canonical_json(g) != before
    # the checkpoint still holds the very same, unmodified node objects
    assert all(cp.nodes[k] is frozen[k] for k in frozen)
    g.restore(cp)
    assert canonical_json(g) == before
    run(g, op("number.add", "n", "q", 1), lt=4)  # a write after restore clones again
    g.restore(cp)
    assert canonical_json(g) == before


def test_a_node_from_another_graph_is_cloned_before_the_first_write() -> None:
    a = graph()
    b = SceneGraph()  # not copy-on-write: still never mutates a node it does not own
    b.nodes = dict(a.nodes)
    b.root_key = a.root_key
    run(b, op("number.set", "n", "p", 1), op("node.insert", "n", "children", {"key": "c"}))
    assert a.get("n", "p") is None and a.nodes["n"].children == []
    assert b.get("n", "p") == 1 and b.nodes["n"].children == ["c"]
    run(b, op("number.add", "n", "p", 1), lt=6)  # b's own clone is written in place now
    assert b.get("n", "p") == 2
