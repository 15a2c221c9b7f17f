"""``patron report`` rendered in headless Chromium (Debian's chromium package), as a reader sees it.

Each test writes a snapshot-shaped directory of Parquet tables with known contents, writes the report,
opens it in one shared headless Chromium over the DevTools protocol and checks what was laid out:
every chart with its marks, their numbers against the fixture's own arithmetic, accessible names,
no console errors, no request besides the file itself, and a screenshot whose chart areas are
painted. Missing and empty tables must give "no data" panels, not a crash.
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from headless_chromium import Browser, Rendered
from PIL import Image
from report_fixtures import AS_OF, STAGES, full_snapshot
from test_ingest import cli, patron
from test_profile_cli import run_cli

from patron.errors import EXIT_INVALID, PatronError
from patron.projections.clv import METADATA_KEY
from patron.projections.report import write_report
from patron.projections.snapshot import publish

CHARTS = (
    "rfm-grid",
    "health-distribution",
    "health-factors",
    "clv-distribution",
    "cohort-retention",
    "lifecycle-funnel",
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    started = Browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield started
    finally:
        started.close()


def render(browser: Browser, snapshot_dir: Path, out: Path) -> Rendered:
    path = write_report(snapshot_dir, out)
    rendered = browser.render(path.resolve().as_uri())
    assert rendered.console == [], rendered.console
    assert rendered.requests == [path.resolve().as_uri()], "a self-contained page fetches nothing else"
    return rendered


def tips(rendered: Rendered, chart: str) -> dict[str, str]:
    """The chart's marks as {what: value} from their tooltips ("R5 ... F3: 12" -> {"R5 ... F3": "12"})."""
    return dict(tip.rsplit(": ", 1) for tip in rendered.page["charts"][chart]["mark_tips"])


def test_every_chart_is_drawn_with_marks_titles_and_pixels(browser, tmp_path):
    full_snapshot(tmp_path / "snap-full")
    rendered = render(browser, tmp_path / "snap-full", tmp_path / "report.html")
    page, charts = rendered.page, rendered.page["charts"]

    assert page["snapshot"] == "snap-full"
    assert page["as_of"] == AS_OF.isoformat(timespec="seconds")
    for chart in CHARTS:
        seen = charts[chart]
        assert not seen["no_data"], f"{chart}: {seen['reason']}"
        assert seen["marks"] > 0 and seen["visible_marks"] == seen["marks"], (chart, seen["marks"])
        assert seen["svg_title"] and seen["svg_title"].startswith(seen["caption"].split(" (")[0])
        assert seen["svg_title"] in rendered.image_names, f"{chart} has no accessible name"
        assert seen["box"]["width"] > 250 and seen["box"]["height"] > 120, (chart, seen["box"])
    assert {"rfm-segments", "health-accounts", "kpi-monthly"} <= set(page["tables"])

    shot = np.asarray(Image.open(io.BytesIO(rendered.png)).convert("RGB"), dtype=np.float64)
    assert shot.std() > 20, "the screenshot is blank"
    for chart in CHARTS:
        box = charts[chart]["box"]
        region = shot[
            int(box["y"]) : int(box["y"] + box["height"]), int(box["x"]) : int(box["x"] + box["width"])
        ]
        colours = {tuple(pixel) for pixel in region.reshape(-1, 3)[::7].astype(int)}
        assert region.size and len(colours) > 20, f"{chart}: its area of the screenshot is not painted"
        saturated = (
            region.max(axis=2) - region.min(axis=2)
        ) > 60  # bars and cells are coloured, text is grey
        assert saturated.mean() > 0.01, f"{chart}: no coloured marks in the screenshot"


def test_charts_show_the_numbers_of_the_tables(browser, tmp_path):
    tables = full_snapshot(tmp_path / "snap-numbers", seed=11)
    rendered = render(browser, tmp_path / "snap-numbers", tmp_path / "report.html")
    rfm, health, clv, lifecycle = (tables[n].to_pylist() for n in ("rfm", "health", "clv", "lifecycle"))

    cells = Counter((row["r_score"], row["f_score"]) for row in rfm)
    expected = {
        f"Recency R{r}, Frequency F{f}": f"{cells[(r, f)]:,}" for r in range(1, 6) for f in range(1, 6)
    }
    assert tips(rendered, "rfm-grid") == expected

    bands: Counter[tuple[str, str]] = Counter()
    for row in health:
        band = min(int(row["score"] // 10), 9)
        bands[(f"{10 * band}-{10 * band + 9 if band < 9 else 100}", row["status"])] += 1
    assert tips(rendered, "health-distribution") == {f"{b} · {s}": str(n) for (b, s), n in bands.items()}

    contributions = defaultdict(list)
    for row in health:
        for factor, explained in json.loads(row["factors"]).items():
            contributions[(factor, row["status"])].append(explained["contribution"])
    shown = tips(rendered, "health-factors")
    for (factor, status), values in contributions.items():
        assert float(shown[f"{factor} · {status}"]) == pytest.approx(np.mean(values), rel=1e-2)

    assert sum(int(n) for n in tips(rendered, "clv-distribution").values()) == len(clv)
    top_bin = max(tips(rendered, "clv-distribution"))  # the "≥ x" bin holds the top 1%
    assert top_bin.startswith("≥")

    stages = Counter(row["stage"] for row in lifecycle)
    assert tips(rendered, "lifecycle-funnel") == {
        stage.replace("_", " "): f"{stages[stage]:,} ({stages[stage] / len(lifecycle):.0%})"
        for stage in STAGES
        if stages[stage]
    }
    funnel_order = [t.rsplit(": ", 1)[0] for t in rendered.page["charts"]["lifecycle-funnel"]["mark_tips"]]
    assert funnel_order == [s.replace("_", " ") for s in STAGES if stages[s]]

    months = defaultdict(set)
    for row in tables["orders_daily"].to_pylist():
        months[row["profile_id"]].add(row["day"].year * 12 + row["day"].month - 1)
    cohorts: dict[int, list[set[int]]] = defaultdict(list)
    for active in months.values():
        cohorts[min(active)].append(active)
    last = max(m for active in months.values() for m in active)
    expected_cells = {}
    for first, members in cohorts.items():
        label = f"{date(first // 12, first % 12 + 1, 1):%Y-%m} ({len(members):,})"
        for k in range(last - first + 1):
            share = sum(first + k in active for active in members) / len(members)
            expected_cells[f"Cohort {label}, Months since first order {k}"] = f"{share:.0%}"
    assert tips(rendered, "cohort-retention") == expected_cells

    headlines = rendered.page["headlines"]
    assert headlines["customers"] == f"{len(tables['customers']):,}"
    assert headlines["orders"] == f"{sum(tables['orders_daily']['orders'].to_pylist()):,}"
    assert headlines["champions"] == f"{sum(row['segment'] == 'Champions' for row in rfm):,}"


def test_missing_and_empty_tables_become_no_data_panels(browser, tmp_path):
    directory = tmp_path / "snap-partial"
    tables = full_snapshot(directory)
    (directory / "clv.parquet").unlink()
    (directory / "lifecycle.parquet").unlink()
    for name in ("health", "orders_daily"):
        pq.write_table(tables[name].schema.empty_table(), directory / f"{name}.parquet")
    rendered = render(browser, directory, tmp_path / "partial.html")
    charts = rendered.page["charts"]

    assert not charts["rfm-grid"]["no_data"] and charts["rfm-grid"]["marks"] == 25
    expected = {
        "clv-distribution": "table clv is not in snapshot snap-partial",
        "lifecycle-funnel": "table lifecycle is not in snapshot snap-partial",
        "health-distribution": "table health has no rows in snapshot snap-partial",
        "health-factors": "table health has no rows in snapshot snap-partial",
        "cohort-retention": "table orders_daily has no rows in snapshot snap-partial",
    }
    for chart, reason in expected.items():
        assert charts[chart]["no_data"] and charts[chart]["marks"] == 0
        assert charts[chart]["reason"] == f"No data: {reason}"
    assert "orders" not in rendered.page["headlines"] and "customers" in rendered.page["headlines"]


def test_clv_without_a_fitted_model_shows_historical_value_and_why(browser, tmp_path):
    directory = tmp_path / "snap-unfitted"
    tables = full_snapshot(directory)
    clv = tables["clv"]
    for name in ("clv_90d", "clv_365d"):
        clv = clv.set_column(clv.schema.get_field_index(name), name, pa.nulls(len(clv), pa.float64()))
    note = [
        {
            "model": "bg_nbd",
            "parameter": None,
            "value": None,
            "log_likelihood": None,
            "n": 3,
            "converged": False,
            "note": "3 repeat customers, fewer than 10; predictions are null",
        }
    ]
    clv = clv.replace_schema_metadata({METADATA_KEY: json.dumps(note)})
    pq.write_table(clv, directory / "clv.parquet")
    rendered = render(browser, directory, tmp_path / "unfitted.html")

    seen = rendered.page["charts"]["clv-distribution"]
    assert seen["svg_title"] == "Historical customer value" and not seen["no_data"]
    assert sum(int(n) for n in tips(rendered, "clv-distribution").values()) == len(clv)
    assert (
        "No prediction: 3 repeat customers, fewer than 10; predictions are null."
        in rendered.page["ledes"]["clv"]
    )
    assert "clv" not in rendered.page["headlines"]


def test_an_empty_snapshot_still_gives_a_page(browser, tmp_path):
    directory = tmp_path / "snap-empty"
    directory.mkdir()
    rendered = render(browser, directory, tmp_path / "empty.html")
    charts = rendered.page["charts"]
    assert set(CHARTS) <= set(charts)
    assert all(seen["no_data"] for seen in charts.values())
    assert re.fullmatch(r"No data: .*", charts["kpi-monthly"]["reason"])


def test_a_missing_snapshot_directory_is_one_clear_error(tmp_path):
    with pytest.raises(
        PatronError, match=r"no such snapshot directory; run `patron snapshot` first"
    ) as raised:
        write_report(tmp_path / "nope", tmp_path / "out.html")
    assert raised.value.exit_code == EXIT_INVALID


# -- the command, as a user runs it ----------------------------------------------------------------
def publish_fixture(data_dir: Path, snapshot_id: str, seed: int) -> Path:
    """A fixture snapshot published the way ``patron snapshot`` publishes (snapshot.json, manifest)."""
    root = data_dir / "snapshots"
    full_snapshot(root / snapshot_id, seed=seed)
    publish(root, snapshot_id, {"as_of": AS_OF.isoformat(), "source": "test fixture"}, keep=5)
    return root / snapshot_id


def test_patron_report_without_a_snapshot_says_to_take_one(tmp_path):
    result = patron(tmp_path / "data", "report")
    assert result.returncode == EXIT_INVALID
    assert "no snapshot yet; run `patron snapshot` first" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_patron_report_writes_the_current_or_the_named_snapshot(browser, tmp_path):
    data_dir = tmp_path / "data"
    publish_fixture(data_dir, "20260101T000000Z-aaaaaa", seed=1)
    publish_fixture(data_dir, "20260102T000000Z-bbbbbb", seed=2)

    current = patron(data_dir, "report")
    assert current.returncode == 0, current.stderr
    assert current.stdout.strip() == str((data_dir / "report.html").resolve())
    assert browser.render((data_dir / "report.html").as_uri()).page["snapshot"] == "20260102T000000Z-bbbbbb"

    out = tmp_path / "older" / "r.html"  # in-process from here: the same command without start-up time
    code, printed, _ = cli(data_dir, "report", "--snapshot", "20260101T000000Z-aaaaaa", "--out", str(out))
    assert code == 0 and printed.strip() == str(out.resolve())
    assert browser.render(out.as_uri()).page["snapshot"] == "20260101T000000Z-aaaaaa"

    code, _, error = cli(data_dir, "report", "--snapshot", "nope")
    assert code == EXIT_INVALID
    assert "snapshot 'nope' is not in" in error and "20260101T000000Z-aaaaaa" in error


def test_report_of_a_real_pipeline_snapshot(browser, tmp_path):
    """generate -> ingest -> run -> snapshot -> report: the charts a user gets from real data."""
    generated, data_dir = tmp_path / "generated", tmp_path / "data"
    run_cli(tmp_path, "generate", "--customers", "60", "--days", "75", "--seed", "3", "--out", str(generated))
    files = [
        str(p) for p in sorted(generated.iterdir()) if (generated / "mappings" / f"{p.stem}.yaml").exists()
    ]
    run_cli(data_dir, "ingest", *files, "--mapping-dir", str(generated / "mappings"))
    run_cli(data_dir, "run")
    run_cli(data_dir, "snapshot")
    printed = run_cli(data_dir, "report").strip()

    rendered = browser.render(Path(printed).as_uri())
    assert rendered.console == []
    current = json.loads((data_dir / "snapshots" / "manifest.json").read_text())["current"]
    assert rendered.page["snapshot"] == current
    customers = pq.read_metadata(data_dir / "snapshots" / current / "customers.parquet").num_rows
    assert rendered.page["headlines"]["customers"] == f"{customers:,}"
    for chart in CHARTS:
        seen = rendered.page["charts"][chart]
        assert not seen["no_data"] and seen["visible_marks"] > 0, (chart, seen["reason"])
    assert rendered.page["charts"]["rfm-grid"]["marks"] == 25
