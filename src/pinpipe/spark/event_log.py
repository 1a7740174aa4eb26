"""Which executor ran how many tasks: Spark's event log of each application.

On the embedded cluster every job writes an event log (the History Server's input: JSON lines
``SparkListener*`` events) to ``<data_dir>/spark/events/<app id>``. It outlives the
application, so a job that ran in another process (the stream job under ``pinpipe up``) can be
summarised after it ended, and it is written by Spark itself, independent of pinpipe's code.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pinpipe.config import Settings

EVENTS = ("SparkListenerApplicationStart", "SparkListenerTaskEnd", "SparkListenerExecutorAdded",
          "SparkListenerExecutorRemoved", "SparkListenerEnvironmentUpdate")  # fmt: skip


def event_log_dir(settings: Settings) -> Path:
    return settings.data_dir / "spark" / "events"


def event_log_conf(settings: Settings, master: str) -> dict[str, str]:
    """The event log on for the embedded cluster's jobs (other masters: as their owner configured)."""
    from pinpipe.services.spark_cluster import embedded_master_url

    if master != embedded_master_url(settings):
        return {}
    directory = event_log_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    return {
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": directory.as_uri(),
        "spark.eventLog.compress": "false",
        "spark.eventLog.rolling.enabled": "false",  # one file per application, plain JSON lines
    }


@dataclass
class AppTasks:
    """One application's tasks: per executor id (``driver`` for local mode), and its executors."""

    app_id: str
    name: str
    master: str
    tasks: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)  # tasks that ended other than Success
    executors: dict[str, str] = field(default_factory=dict)  # id -> host
    removed: dict[str, str] = field(default_factory=dict)  # id -> reason

    def describe(self) -> str:
        per = ", ".join(f"executor {e} ({self.executors.get(e, '?')}) {n:,}" for e, n in sorted(self.tasks.items()))
        lost = f"; executors lost: {', '.join(sorted(self.removed))}" if self.removed else ""
        return f"{self.name} ({self.app_id}) on {self.master}: {sum(self.tasks.values()):,} tasks: {per}{lost}"


def read_event_log(path: Path) -> AppTasks:
    """Parse one application's event log (finished or ``.inprogress``)."""
    app = AppTasks(app_id=path.name.removesuffix(".inprogress"), name="?", master="?")
    with open(path, encoding="utf-8", errors="replace") as log:
        for line in log:
            name = line[10:60].split('"', 1)[0] if line.startswith('{"Event":"') else ""
            if name not in EVENTS:
                continue
            try:
                event = json.loads(line)
            except ValueError:  # the last line of a log still being written
                continue
            if name == "SparkListenerTaskEnd":
                info = event["Task Info"]
                executor = str(info["Executor ID"])
                app.tasks[executor] += 1
                if event.get("Task End Reason", {}).get("Reason") != "Success":
                    app.failed[executor] += 1
            elif name == "SparkListenerExecutorAdded":
                app.executors[str(event["Executor ID"])] = event["Executor Info"]["Host"]
            elif name == "SparkListenerExecutorRemoved":
                app.removed[str(event["Executor ID"])] = event.get("Removed Reason", "")
            elif name == "SparkListenerApplicationStart":
                app.name, app.app_id = event["App Name"], event.get("App ID", app.app_id)
            elif name == "SparkListenerEnvironmentUpdate":
                properties = event.get("Spark Properties") or {}
                if isinstance(properties, list):  # [[key, value], ...] in some versions
                    properties = dict(properties)
                app.master = properties.get("spark.master", app.master)
    return app


def applications(settings: Settings, since: float = 0.0) -> list[AppTasks]:
    """The applications whose event log changed at or after ``since`` (a ``time.time()``), oldest first."""
    directory = event_log_dir(settings)
    if not directory.is_dir():
        return []
    logs = [p for p in directory.iterdir() if p.is_file() and p.stat().st_mtime >= since]
    return [read_event_log(p) for p in sorted(logs, key=lambda p: p.stat().st_mtime)]
