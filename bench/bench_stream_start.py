"""The stream job's start-up: from its process start to its first micro-batch committed.

``pinpipe up`` (and so the demo) starts the emulator only once the stream job's new query has
committed its first micro-batch, so this is what a newcomer waits for. Starts an embedded
broker and PostgreSQL, then runs ``python -m pinpipe.speed`` (as ``pinpipe up`` does) on a
fresh checkpoint ``--repeat`` times, stamping each line of its log as it arrives, and prints
the split: Python and the Spark session, the warm-up, the query's start, its first micro-batch;
with the CPU the whole machine spent meanwhile (on 2 cores the phases compete for it).

``--baseline-ref REF`` runs, alternating with the working tree in the same invocation, the
stream job of an earlier commit (a temporary ``git worktree``, on ``PYTHONPATH``), for the
ratio. ``--warmup-rows`` sets ``speed.warmup_rows`` for both::

    .venv/bin/python bench/bench_stream_start.py --repeat 3 --baseline-ref 0efd568
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (phase, the log line that ends it); an earlier commit may not log every one of them.
PHASES = [
    ("spark session", "spark session up"),
    ("warm-up", "warmed up on generated records"),
    ("query start", "query started"),
    ("first micro-batch", "batch 0 ("),
]


def busy_cpu_s() -> float:
    """CPU seconds the whole machine spent busy since boot (every core)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def one_start(src: Path, env: dict[str, str], workdir: Path, timeout_s: float) -> dict[str, float]:
    """Run the stream job of ``src`` until its first micro-batch; seconds from spawn per phase end."""
    checkpoint = workdir / f"ckpt-{time.monotonic_ns()}"
    run_env = {**env, "PYTHONPATH": str(src), "PYTHONUNBUFFERED": "1"}
    cpu0, began = busy_cpu_s(), time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "pinpipe.speed", "--checkpoint-dir", str(checkpoint)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=run_env, cwd=workdir, text=True,
        start_new_session=True,
    )  # fmt: skip
    ended: dict[str, float] = {}
    log = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            log.append(line)
            for phase, marker in PHASES:
                if phase not in ended and marker in line:
                    ended[phase] = time.monotonic() - began
            if "first micro-batch" in ended or time.monotonic() - began > timeout_s:
                break
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(checkpoint, ignore_errors=True)
    if "first micro-batch" not in ended:
        raise SystemExit(f"no first micro-batch within {timeout_s:.0f} s:\n{''.join(log[-30:])}")
    ended["cpu"] = busy_cpu_s() - cpu0  # up to the first micro-batch, plus the stop
    return ended


def split(ended: dict[str, float]) -> dict[str, float | None]:
    """Each phase's own duration (None where the code does not log its end)."""
    out: dict[str, float | None] = {}
    previous = 0.0
    for phase, _ in PHASES:
        if phase in ended:
            out[phase], previous = ended[phase] - previous, ended[phase]
        else:
            out[phase] = None
    out["total"] = ended["first micro-batch"]
    out["cpu"] = ended["cpu"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-ref", help="an earlier commit to compare with, alternating")
    parser.add_argument("--warmup-rows", type=int, default=None, help="speed.warmup_rows for every run")
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args()

    from pinpipe.services.broker import EmbeddedBroker
    from pinpipe.services.postgres import EmbeddedPostgres

    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="pinpipe-bench-start-", dir="/tmp"))
        workdir.chmod(0o755)  # PostgreSQL's user (as root: nobody) enters it
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        broker = stack.enter_context(EmbeddedBroker(workdir / "logs"))
        server = stack.enter_context(EmbeddedPostgres(workdir / "postgres"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PINPIPE_")}
        env.update(PINPIPE_DATA_DIR=str(workdir / "data"),
                   PINPIPE_BROKER__BOOTSTRAP_SERVERS=broker.bootstrap_servers,
                   PINPIPE_POSTGRES__DSN=server.dsn)  # fmt: skip
        if args.warmup_rows is not None:
            env["PINPIPE_SPEED__WARMUP_ROWS"] = str(args.warmup_rows)
        trees = {"working tree": ROOT / "src"}
        if args.baseline_ref:
            tree = workdir / "baseline"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.baseline_ref],
                           check=True, capture_output=True)  # fmt: skip
            stack.callback(subprocess.run, ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           capture_output=True)  # fmt: skip
            trees = {args.baseline_ref: tree / "src", **trees}
        runs: dict[str, list[dict[str, float | None]]] = {name: [] for name in trees}
        for attempt in range(args.repeat):
            for name, src in trees.items():
                result = split(one_start(src, env, workdir, args.timeout))
                runs[name].append(result)
                shown = ", ".join(f"{k} {v:.1f}" for k, v in result.items() if v is not None)
                print(f"run {attempt + 1} {name}: {shown}", flush=True)

    columns = [phase for phase, _ in PHASES] + ["total", "cpu"]
    print()
    print(f"median of {args.repeat} runs, seconds (cpu: busy CPU seconds of the whole machine, both cores)")
    print(f"{'code':<16}" + "".join(f"{c:>19}" for c in columns))
    medians = {}
    for name, results in runs.items():
        medians[name] = {c: _median([r[c] for r in results]) for c in columns}
        print(f"{name:<16}" + "".join(f"{_cell(medians[name][c]):>19}" for c in columns))
    if args.baseline_ref:
        ratio = medians["working tree"]["total"] / medians[args.baseline_ref]["total"]
        print(f"first micro-batch, working tree / {args.baseline_ref}: {ratio:.2f}")


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
