"""``durasync p2p host|connect`` as processes, and identity key files."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from durasync.cli import main
from durasync.p2p.identity import Identity, InsecureKeyFile
from helpers import start_server

DURASYNC = [sys.executable, "-m", "durasync"]


def test_p2p_help_names_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    # In-process (argparse): the tests below run the same entry point as processes.
    with pytest.raises(SystemExit) as exit_:
        main(["p2p", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "host" in out and "connect" in out
    with pytest.raises(SystemExit) as exit_:
        main(["p2p", "connect", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "--service" in out and "--uuid" in out
    with pytest.raises(SystemExit) as exit_:
        main(["p2p", "host", "ftp://x", "--user", "a", "--service", "a.b@1.0.0"])
    assert exit_.value.code == 2 and "not an http(s) server URL" in capsys.readouterr().err


def test_host_and_connect_deliver_every_line_once_in_order(tmp_path: Path) -> None:
    server = start_server("--port", "0", "--memory")
    key = tmp_path / "robot.key"
    host = subprocess.Popen(
        [
            *DURASYNC,
            "p2p",
            "host",
            server.url,
            "--user",
            "robot",
            "--service",
            "org.lab.arm@1.2.0",
            "--key",
            str(key),
            "--echo",
            "--ice-address",
            "127.0.0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert host.stderr is not None
        published = threading.Event()
        errors: list[str] = []

        def watch() -> None:
            assert host.stderr is not None
            for line in host.stderr:
                errors.append(line)
                if line.startswith("published "):
                    published.set()

        threading.Thread(target=watch, daemon=True).start()
        assert published.wait(30), errors
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
        lines = [f"line {i} ✓" for i in range(200)]
        connect = subprocess.run(
            [
                *DURASYNC,
                "p2p",
                "connect",
                server.url,
                "--user",
                "robot",
                "--service",
                "org.lab.arm@1.2.0",
                "--ice-address",
                "127.0.0.1",
            ],
            input="\n".join(lines) + "\n",
            capture_output=True,
            check=False,
            text=True,
            timeout=60,
        )
        assert connect.returncode == 0, connect.stderr
        host.send_signal(signal.SIGTERM)
        out, _ = host.communicate(timeout=30)
        assert host.returncode == 0, errors
        assert out.splitlines() == lines  # the host got every line once, in order
    finally:
        if host.poll() is None:
            host.kill()
            host.wait(10)
        server.stop()


def test_connect_to_a_missing_service_fails_with_exit_1(tmp_path: Path) -> None:
    server = start_server("--port", "0", "--memory")
    try:
        out = subprocess.run(
            [*DURASYNC, "p2p", "connect", server.url, "--user", "nobody", "--service", "a.b@1.0.0"],
            input="",
            capture_output=True,
            check=False,
            text=True,
            timeout=120,
        )
    finally:
        server.stop()
    # never connected and no such service: a typo, not a restarting host -> stop at once
    assert out.returncode == 1, out.stderr
    assert "NO_SUCH_SERVICE" in out.stderr


def test_identity_files_are_private(tmp_path: Path) -> None:
    key = tmp_path / "id.key"
    ident = Identity.load_or_create(key)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert Identity.load(key).public_key == ident.public_key
    os.chmod(key, 0o644)
    with pytest.raises(InsecureKeyFile):
        Identity.load(key)
    key.write_text("not a key\n")
    os.chmod(key, 0o600)
    with pytest.raises(ValueError):
        Identity.load(key)
