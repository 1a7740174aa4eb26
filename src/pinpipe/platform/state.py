"""The run dir's record of ``pinpipe up``: ``<run_dir>/up.json`` (pids, addresses, ports; no
secrets) while it runs, ``up-last-run.json`` after, so ``status`` and ``down`` work from another
terminal, and a killed up's leftovers can be found."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pinpipe.config import Settings

if TYPE_CHECKING:
    pass

STATE_FILE = "up.json"
LAST_RUN_FILE = "up-last-run.json"
EMULATOR_STATS_DIR = "emulator"  # <run_dir>/emulator/<pid>.json: each emulator process's counts


def write_json(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_state(settings: Settings) -> dict | None:
    """The record of a running ``pinpipe up`` (None if none, or if its process is gone)."""
    from pinpipe.processes import pid_is_alive

    state = recorded_state(settings)
    if state is None or not pid_is_alive(int(state.get("pid", 0))):
        return None
    return state


def recorded_state(settings: Settings) -> dict | None:
    """up.json as it was last written, whether or not its ``pinpipe up`` still runs."""
    try:
        return json.loads((settings.run_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def recorded_ports(settings: Settings) -> dict[str, int]:
    """Ports of the components of a running ``pinpipe up`` (``ingest``, ``lake-sink``, ...)."""
    state = read_state(settings)
    return {} if state is None else {k: int(v) for k, v in state.get("ports", {}).items()}


def clear_state(settings: Settings) -> None:
    (settings.run_dir / STATE_FILE).unlink(missing_ok=True)


def left_behind(settings: Settings) -> list[str]:
    """Components of a killed ``pinpipe up`` that still run ("api (pid 12)", ...); its services
    are not counted: a new up uses them."""
    from pinpipe.processes import pid_is_alive

    state = recorded_state(settings)
    if state is None or pid_is_alive(int(state.get("pid", 0))):
        return []
    return [f"{c['name']} (pid {c['pid']})" for c in own_children(state)]


def own_children(state: dict) -> list[dict]:
    """The components in up's record that up started as processes of its own and that still
    run (the command line guards against a pid reused since): not the services (broker,
    PostgreSQL, the Spark cluster's daemons)."""
    from pinpipe.processes import process_cmdline

    services = set(state.get("services", ["broker", "postgres"]))
    return [c for c in state.get("components", []) if c["name"] not in services
            and c.get("pid") and "pinpipe" in process_cmdline(int(c["pid"]))]
