"""The soak's verdict and its printed report (:func:`judge`, :func:`render`)."""

from __future__ import annotations

import statistics
import time

from soak_lib.platform import log_excerpts


def judge(verdict, layers, faults, results, options, warnings: list[str]) -> list[str]:
    """The reasons the soak failed (``warnings`` gets what falls short of a target only)."""
    failures = []
    if verdict is not None:
        for name in ("lost", "duplicated", "unexpected", "missing_from_pg", "slot_mismatch"):
            if getattr(verdict, name):
                failures.append(f"{getattr(verdict, name):,} records {name.replace('_', ' ')}")
        if verdict.lost and results.get("lake verify") and results["lake verify"].code == 0:
            failures.append(f"{verdict.lost:,} records lost that `pinpipe lake verify` did not report")
        if verdict.acknowledged == 0:
            failures.append("no record was acknowledged")
    if layers is not None and not all(c.ok for c in layers):
        failures.append("the speed layer differs from the batch layer: " + "; ".join(
            f"{c.table.value}: batch {c.batch_rows:,}, speed {c.speed_rows:,}, equal {c.equal_rows:,}"
            + "".join(f"; {d}" for d in c.differences) for c in layers if not c.ok))
    for fault in faults:
        if fault.recovered_s is None:
            failures.append(f"{fault.kind} at {fault.wall}: {'; '.join(fault.notes)}")
        elif fault.recovered_s > options.recovery_target_s:
            warnings.append(f"{fault.kind} at {fault.wall}: recovered in {fault.recovered_s:.1f} s"
                            f" (target {options.recovery_target_s:g} s)")
    return failures


def render(options, load, faults, verdict, layers, results, data_dir, failures, warnings) -> str:
    """The printed report: the load, faults by kind, records, pinpipe's own words, log excerpts."""
    lines = [f"soak: {options.minutes:g} min at {options.rate:g} posts/s x {options.batch} records, "
             f"a fault every <= {options.fault_every_s:g} s, seed {options.seed}; data dir {data_dir}"]
    if load is not None and load.stats.started:
        took = (load.stats.stopped or time.monotonic()) - load.stats.started
        lines.append(f"load: {load.stats.posts:,} posts ({load.stats.posts / max(took, 1):.1f}/s achieved), "
                     f"{load.stats.requests:,} requests; answers: "
                     + ", ".join(f"{k} {v:,}" for k, v in sorted(load.stats.statuses.items())))
        if load.stats.behind_s:
            lines.append(f"the load fell behind its schedule by {load.stats.behind_s:,.0f} s in all (every request"
                         f" slot of {load.concurrency} busy)")
        lines.append("200s per minute (API latency p50/p99 s): " + ", ".join(
            f"{n:,} ({p50:.2f}/{p99:.2f})" for _, n, p50, p99 in load.by_minute()))
    lines += ["", f"{'fault':<16}{'count':>6}{'recovery p50':>14}{'max':>8}{'first 200 max':>15}"
              f"{'healthy max':>13}{'stream max':>12}  notes"]
    for kind in sorted({f.kind for f in faults}):
        group = [f for f in faults if f.kind == kind]
        recovered = [f.recovered_s for f in group if f.recovered_s is not None]

        def worst(name: str) -> str:
            values = [getattr(f, name) for f in group]
            return ">" if None in values else f"{max(values):.1f}"

        p50 = f"{statistics.median(recovered):.1f}" if recovered else "-"
        peak = ">" + f"{options.recovery_timeout_s:g}" if len(recovered) < len(group) else f"{max(recovered):.1f}"
        notes = "; ".join(sorted({n for f in group for n in f.notes}))
        lines.append(f"{kind:<16}{len(group):>6}{p50:>14}{peak:>8}{worst('first_ok_s'):>15}"
                     f"{worst('healthy_s'):>13}{worst('stream_s'):>12}  {notes}")
    gaps = [b.at - a.at for a, b in zip(faults, faults[1:])]
    lines.append(f"{'total':<16}{len(faults):>6}" + (f"  (longest gap between faults {max(gaps):.0f} s)" if gaps else ""))
    if verdict is not None:
        lines += ["", f"records sent {verdict.sent:,}: acknowledged {verdict.acknowledged:,}, never acknowledged "
                  f"{verdict.never_acknowledged:,}; answers refused (429/503) {verdict.refused_answers:,}, "
                  f"unanswered {verdict.no_answer:,}, unexpected {verdict.unexpected:,}",
                  f"lake: lost {verdict.lost:,}, duplicated {verdict.duplicated:,} "
                  f"(same offset twice {verdict.coordinate_duplicates:,}), copies of re-sent records "
                  f"{verdict.resent_copies:,}, 200's offset not holding the record {verdict.slot_mismatch:,}",
                  f"PostgreSQL: acknowledged keys missing {verdict.missing_from_pg:,}"]
        for kind, examples in verdict.examples.items():
            lines += [f"  {kind}: {e}" for e in examples]
    if layers is not None:
        lines.append("speed vs batch (compare_layers): " + ", ".join(
            f"{c.table.value} {c.equal_rows:,}/{c.batch_rows:,} equal ({c.speed_rows:,} in PostgreSQL)" for c in layers))
    for name in ("lake verify",):
        verify = results.get(name)
        if verify is not None:
            lines += ["", f"pinpipe {name}: exit {verify.code}", verify.tail(12)]
    down = results.get("down")
    if down is not None:
        lines += ["", f"pinpipe down: exit {down.code} in {down.seconds:.0f} s", down.tail(6)]
    if load is not None and load.stats.examples:
        lines += ["", "unexpected answers:"] + [f"  {e}" for e in load.stats.examples]
    excerpts = log_excerpts(data_dir / "logs")
    if excerpts:
        lines += ["", "log excerpts (logs/):"]
        for name, found in excerpts.items():
            lines += [f"  {name}:"] + [f"    {line}" for line in found]
    lines += [""] + [f"warning: {w}" for w in warnings]
    lines += [f"FAILED: {f}" for f in failures] or ["PASSED: nothing lost, duplicated or unexpected"]
    return "\n".join(lines)
