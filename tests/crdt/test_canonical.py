"""Canonical JSON: JS-style numbers after 12-significant-digit rounding, sorting, escaping."""

from __future__ import annotations

import json
import math
import random
import shutil
import struct
import subprocess

import pytest

from durasync.crdt import SceneGraph, canonical_json, checksum, format_number

from .crdt_helpers import msg, op, root_msg


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (0, "0"),
        (-0.0, "0"),
        (0.0, "0"),
        (7, "7"),
        (-12, "-12"),
        (10**22, "10000000000000000000000"),  # ints print as ints
        (1.0, "1"),
        (-3.0, "-3"),
        (0.5, "0.5"),
        (0.1 + 0.2, "0.3"),
        (1 / 3, "0.333333333333"),
        (2 / 3, "0.666666666667"),
        (123456.789, "123456.789"),
        (1e21, "1e+21"),
        (1.5e21, "1.5e+21"),
        (1e20, "100000000000000000000"),
        # integral values within +-(2^53-1) print whole, float or int (JS cannot tell them)
        (123456789012345.0, "123456789012345"),
        (1234567890123.0, "1234567890123"),
        (-1234567890123.0, "-1234567890123"),
        (9007199254740991.0, "9007199254740991"),
        (2.0**53, "9007199254740000"),  # beyond: rounded to 12 digits like any other float
        (123456789012345.5, "123456789012000"),
        (1e-6, "0.000001"),
        (1e-7, "1e-7"),
        (1.2345e-7, "1.2345e-7"),
        (-2.5e-8, "-2.5e-8"),
        (1.0000000000005e12, "1000000000000"),  # 13 integer digits: rounded to tens
        (0.1234567890125, "0.123456789012"),  # the double is just below the tie
        (math.nan, "null"),
        (math.inf, "null"),
        (-math.inf, "null"),
        (-1e-300, "-1e-300"),
        (5e-324, "5e-324"),
    ],
)
def test_format_number(x: float, text: str) -> None:
    assert format_number(x) == text


def test_dump_sorting_escaping_and_views() -> None:
    g = SceneGraph()
    g.apply_message(root_msg("a", 1, "b", "\u00e9", "z"))
    g.apply_message(
        msg(
            "a",
            2,
            op("object.set", "b", "o", {"z": 1, "a": [1.0, -0.0, 'é\n"q"'], "m": None}),
            op("boolean.set", "b", "flag", True),
            op("node.remove", "scene", "children", "z"),
        )
    )
    full = canonical_json(g)
    assert '"o":{"a":[1,0,"é\\n\\"q\\""],"m":null,"z":1}' in full
    assert '"z":{"children":[],"deleted":true' in full
    assert full.index('"\u00e9"') > full.index('"z"')  # code point order
    live = canonical_json(g, live=True)
    assert '"z":{' not in live
    assert '"children":["b","é"]' in live
    assert " " not in canonical_json(g, live=True).replace("é\\n", "")
    assert checksum(g) == checksum(g)
    assert checksum(g, live=False) != checksum(g)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_format_number_agrees_with_javascript() -> None:
    """Differential check against node: ``String(x)`` for an integral ``x`` within
    +-(2^53-1), else ``String(Number(x.toPrecision(12)))``."""
    rnd = random.Random(7)
    xs: list[float] = []
    while len(xs) < 3000:
        k = rnd.random()
        if k < 0.4:
            x = struct.unpack("d", struct.pack("Q", rnd.getrandbits(64)))[0]
        elif k < 0.65:
            x = rnd.choice([1, -1]) * 10 ** rnd.uniform(-10, 25)
        elif k < 0.85:
            x = round(rnd.uniform(-1000, 1000), rnd.randint(0, 14))
        else:  # integral floats of 1 to 17 digits, around the 2^53 bound too
            x = float(rnd.choice([1, -1]) * rnd.randint(1, 10 ** rnd.randint(1, 17)))
        if math.isfinite(x):
            xs.append(x)
    xs += [2.0**53 - 1, -(2.0**53 - 1), 2.0**53, 2.0**53 + 2, 1e15, 1234567890123.0]
    js = (
        "const xs=JSON.parse(require('fs').readFileSync(0,'utf8'));"
        "console.log(JSON.stringify(xs.map(x=>{if(Number.isSafeInteger(x))return String(x);"
        "const r=Number(x.toPrecision(12));return Object.is(r,-0)?'0':String(r)})))"
    )
    res = subprocess.run(
        ["node", "-e", js],
        input=json.dumps(xs),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    expected = json.loads(res.stdout)
    mismatches = [
        (x, format_number(x), e) for x, e in zip(xs, expected, strict=True) if format_number(x) != e
    ]
    assert mismatches == []
