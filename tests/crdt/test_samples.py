"""The shared reference samples must replay byte for byte (crdt-canonical-json.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from durasync.crdt.__main__ import main

HERE = Path(__file__).parent / "samples"
REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared/reference/crdt-samples"
SAMPLES = sorted(p.name[: -len(".jsonl")] for p in HERE.glob("*.jsonl"))


def test_sample_copies_are_current() -> None:
    """The in-repo copies equal the shared originals (skipped only when shared/ is absent)."""
    if not SHARED.is_dir():
        pytest.skip("shared/reference is not next to this checkout")
    for p in SHARED.iterdir():
        assert (HERE / p.name).read_bytes() == p.read_bytes(), p.name


def test_samples_found() -> None:
    assert {"handwritten-smoke", "text-s31.compact"} <= set(SAMPLES)


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("live", [False, True])
def test_replay_matches_expected(name: str, live: bool, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["replay", str(HERE / f"{name}.jsonl")]
    expected = HERE / f"{name}{'.live' if live else ''}.expected.json"
    if live:
        args.append("--drop-tombstones")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.encode("utf-8") == expected.read_bytes()


@pytest.mark.parametrize("name", SAMPLES)
def test_canonical_order_is_causal_here_too(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """These samples are causal, so sorting by (lt, client) yields the same graph."""
    assert main(["replay", "--order", "canonical", str(HERE / f"{name}.jsonl")]) == 0
    out = capsys.readouterr().out
    assert out.encode() == (HERE / f"{name}.expected.json").read_bytes()


def test_with_meta_adds_lww(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--with-meta", str(HERE / "handwritten-smoke.jsonl")]) == 0
    out = capsys.readouterr().out
    # b:2 (lt 2, client b) beats a:2 (lt 2, client a) on the tie
    assert '"lww":{"opacity":{"client":"b","lt":2}}' in out
    assert '"lww":{}' in out


def test_bad_line_exits_2_with_line_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = (HERE / "handwritten-smoke.jsonl").read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        "\n".join(
            [
                "# comment",
                "",
                "// another",
                src[0],
                '{"id":"x","client":"c","lt":1,"ts":1,"ops":[{"ot":"number.set","key":"scene","path":"a","value":"no"}]}',
            ]
        )
    )
    assert main(["replay", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "line 5" in err and "ops[0].value" in err


def test_unparseable_line_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "client": "c"\n')
    assert main(["replay", str(bad)]) == 2
    assert "line 1" in capsys.readouterr().err


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(tmp_path / "nope.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_wire_wrapper_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = (HERE / "handwritten-smoke.jsonl").read_text().splitlines()
    wrapped = [
        f'{{"mtype":"{"crdt" if i % 2 else "broadcast"}","msg":{ln}}}' for i, ln in enumerate(lines)
    ]
    f = tmp_path / "w.jsonl"
    f.write_text("\n".join(wrapped))
    assert main(["replay", str(f)]) == 0
    assert (
        capsys.readouterr().out.encode() == (HERE / "handwritten-smoke.expected.json").read_bytes()
    )


def test_help_mentions_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["replay", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--order", "--drop-tombstones", "--with-meta"):
        assert flag in out
