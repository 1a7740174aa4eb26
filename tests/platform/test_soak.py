"""The chaos soak, short: three minutes of `pinpipe up` under load, one fault of each cheap kind
and an immediate PostgreSQL restart (which the stream job rides out without a restart).

``bench/soak.py`` judges with its own reading of the lake and PostgreSQL (nothing acknowledged
lost or duplicated, every key in the speed tables, the speed and batch layers equal, no answer
but 200/429/503). About four to five minutes on a quiet machine; ``-m "not soak"`` skips it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = [pytest.mark.soak, pytest.mark.integration, pytest.mark.timeout(900)]


def _soak_module():
    spec = importlib.util.spec_from_file_location("soak", BENCH / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module
    spec.loader.exec_module(module)
    return module


def test_soak_survives_one_fault_of_each_cheap_kind() -> None:
    soak = _soak_module()
    kinds = (*soak.fault_lib.CHEAP, "pg-restart")
    options = soak.SoakOptions(
        minutes=3, rate=50, batch=3, fault_every_s=30, seed=16, kinds=kinds,
        pause_s=(10, 10), warmup_s=10, clean=True,
    )
    result = soak.run_soak(options)
    print(result.report)
    assert {fault.kind for fault in result.faults} == set(kinds), result.report
    assert result.ok, result.report
