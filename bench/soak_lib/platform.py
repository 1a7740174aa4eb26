"""The pinpipe under test: its own data dir, its commands as subprocesses, its settings.

Everything runs as ``python -m pinpipe.cli ...`` with this interpreter and the soak's
environment (``PINPIPE_DATA_DIR`` and small settings; ``PYTHONPATH`` passed on, so children
import the same pinpipe). The broker and PostgreSQL are started with ``pinpipe services up``
before ``pinpipe up``: up then leaves them running at ``pinpipe down``, so the soak can read the
sink's committed offsets and the speed tables after the drain.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


@dataclass
class CommandResult:
    argv: list[str]
    code: int | None  # None: timed out
    output: str
    seconds: float

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.output.rstrip().splitlines()[-lines:])


def soak_env(data_dir: Path, *, rotate_age_s: float, broker_storage: str | None = None) -> dict[str, str]:
    """The environment of every pinpipe command of the soak (free ports: other runs share the
    machine)."""
    env = {
        **os.environ,
        "PINPIPE_DATA_DIR": str(data_dir),
        "PINPIPE_INGEST__PORT": "0",
        "PINPIPE_UP__LAKE_METRICS_PORT": "0",
        "PINPIPE_UP__STREAM_METRICS_PORT": "0",
        "PINPIPE_UP__DASHBOARD__PORT": "0",
        "PINPIPE_LAKE__ROTATE_AGE_S": str(rotate_age_s),
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "160",  # rich's tables in the captured output, unshortened
    }
    path = os.environ.get("PYTHONPATH", "")
    if str(SRC) not in path.split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), path) if p)
    if broker_storage:
        env["PINPIPE_BROKER__STORAGE"] = broker_storage  # the durable broker's setting, when it exists
    for name in ("PINPIPE_CONFIG", "PINPIPE_BROKER__BOOTSTRAP_SERVERS", "PINPIPE_POSTGRES__DSN"):
        env.pop(name, None)  # the soak runs on its own embedded services
    return env


@contextmanager
def environment(env: dict[str, str]):
    """``os.environ`` as ``env`` for a while (settings are read from it when built)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def load_soak_settings(env: dict[str, str]):
    from pinpipe.config import load_settings

    with environment(env):
        return load_settings()


def pinpipe(env: dict[str, str], *args: str, timeout_s: float = 600.0, log: Path | None = None) -> CommandResult:
    """Run ``pinpipe <args>``; its output is returned (and appended to ``log``)."""
    argv = [sys.executable, "-m", "pinpipe.cli", *args]
    began = time.monotonic()
    try:
        done = subprocess.run(argv, env=env, cwd=env["PINPIPE_DATA_DIR"], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout_s)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as error:
        code = None
        output = (error.stdout or b"").decode(errors="replace") if isinstance(error.stdout, bytes) else (error.stdout or "")
    result = CommandResult(argv, code, output, time.monotonic() - began)
    if log is not None:
        with log.open("a", encoding="utf-8") as out:
            out.write(f"\n$ pinpipe {' '.join(args)}  (exit {code}, {result.seconds:.1f} s)\n{output}")
    return result


def log_excerpts(logs: Path, patterns: tuple[str, ...] = ("Traceback", "ERROR", "exited", "giving up",
                                                           "did not", "SIGKILL", "lost", "rebalanc",
                                                           "unavailable", "Error:"),
                 per_file: int = 12) -> dict[str, list[str]]:
    """Lines of the data dir's logs that say something went wrong, a few per file."""
    found: dict[str, list[str]] = {}
    for path in sorted(logs.glob("*.log")):
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        hits = [line[:240] for line in lines if any(p in line for p in patterns)]
        if hits:
            found[path.name] = hits[:per_file] + ([f"... {len(hits) - per_file} more"] if len(hits) > per_file else [])
    return found
