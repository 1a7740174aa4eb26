"""The CLI stays light (`pinpipe --help` imports no heavy stack) and is the one front door:
``python -m pinpipe.lake``, ``.speed`` and ``.batch`` run its commands with their options."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from pinpipe.cli import run_command
from pinpipe.processes import stop_on_signals

HEAVY = ("confluent_kafka", "psycopg", "pyarrow", "faker", "httpx", "fastapi", "pyspark", "uvicorn")


def test_help_imports_no_heavy_stack():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from pinpipe.cli import app\n"
        "result = CliRunner().invoke(app, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "assert 'emulate' in result.output and 'services' in result.output\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == ""


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "pinpipe.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "Usage" in result.stdout


@pytest.mark.parametrize(("module", "options"), [
    ("pinpipe.lake", ["--bootstrap", "--data-dir", "--topic-prefix", "--group", "--session-timeout-ms",
                      "--rotate-records", "--metrics-port", "--log-level", "--json"]),
    ("pinpipe.speed", ["--trigger-s", "--checkpoint-dir", "--metrics-port", "--log-level"]),
    ("pinpipe.batch", ["--date", "--range", "--all", "--no-publish", "--json"]),
])
def test_python_dash_m_runs_the_cli_command_with_its_options(module, options):
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "Usage: pinpipe " in result.stdout
    assert [option for option in options if option not in result.stdout] == []


def test_the_batch_shell_exits_2_without_exactly_one_choice_of_days():
    for argv in ([], ["--date", "2026-11-21", "--all"], ["--range", "2026-11-21", "2026-11-22", "--from", "x"],
                 ["--date", "21.11.2026"]):
        assert run_command("batch", "--json", argv=argv) == 2, argv


def test_run_command_takes_config_where_pinpipe_does(tmp_path, capsys):
    """``python -m pinpipe.batch --config FILE ...``: the file is pinpipe's --config."""
    missing = tmp_path / "nope.toml"
    assert run_command("config", argv=["--config", str(missing)]) == 2
    assert run_command("config", argv=[f"--config={missing}"]) == 2
    assert "config file not found" in capsys.readouterr().err
    path = tmp_path / "pinpipe.toml"
    path.write_text('[broker]\ntopic_prefix = "from-file"\n')
    assert run_command("config", argv=["-c", str(path)]) == 0
    assert '"topic_prefix": "from-file"' in capsys.readouterr().out


def test_a_signal_sets_the_stop_event_inside_the_block_only():
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
    assert signal.getsignal(signal.SIGTERM) is before
    with stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.wait(5)
