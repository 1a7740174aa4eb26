"""The CLI stays light: `pinpipe --help` imports no heavy stack."""

from __future__ import annotations

import subprocess
import sys

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
