"""The projections benchmark compares our rebuild + RFM with pandas and lifetimes; the comparison only
means something if all three compute the same numbers. Here, at a small size: the benchmark's data
builder (real codec, real embedded log, real profile store), our rebuild and score builders, and
pandas/lifetimes over the decoded orders must agree customer by customer."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pyarrow.parquet as pq
import pytest

from patron.config import Settings
from patron.events.codec import open_codec
from patron.projections.clv import build_clv
from patron.projections.rebuild import rebuild
from patron.projections.rfm import build_rfm
from patron.streams.local_log import LocalLog

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "projections.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_projections", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_rebuilt_rfm_and_clv_inputs_equal_pandas_and_lifetimes(bench: ModuleType, tmp_path: Path) -> None:
    data = tmp_path / "data"
    built = bench.build_data(data, bench.Params(customers=300, events_per_customer=10, seed=3))
    assert built["events"] > 2000 and not built["reused"]
    assert bench.build_data(data, bench.Params(300, 10, 3))["reused"]

    log = LocalLog(data)
    try:
        rebuilt = rebuild(log, open_codec(Settings.load(data_dir=data)), workers=2)
    finally:
        log.close()
    assert rebuilt.stats.folded == rebuilt.stats.records == built["events"]
    moment = bench.as_of_moment()
    pq.write_table(build_rfm(rebuilt.tables, moment), tmp_path / "rfm.parquet")
    pq.write_table(build_clv(rebuilt.tables, moment), tmp_path / "clv.parquet")

    orders = bench.pandas_orders(data)
    theirs = bench.pandas_rfm(orders)
    rfm_columns = ["recency_days", "frequency", "monetary"]
    ours = bench._ours_by_user(tmp_path / "rfm.parquet", rfm_columns)
    assert len(ours) > 150  # most customers ordered: the comparison covers them
    bench.check_agree(ours, theirs, dict(zip(rfm_columns, rfm_columns, strict=True)), "RFM")
    clv_columns = ["frequency", "recency", "T", "monetary_value"]
    bench.check_agree(
        bench._ours_by_user(tmp_path / "clv.parquet", clv_columns),
        bench.lifetimes_summary(orders),
        dict(zip(clv_columns, clv_columns, strict=True)),
        "CLV inputs",
    )

    # the check itself fails on a difference (it is what stops the benchmark)
    theirs.iloc[0, theirs.columns.get_loc("monetary")] += 0.01
    with pytest.raises(SystemExit, match="monetary differs for 1 customers"):
        bench.check_agree(ours, theirs, dict(zip(rfm_columns, rfm_columns, strict=True)), "RFM")
