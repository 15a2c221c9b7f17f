"""RFM: hand-built orders with exact expected values, scores and segments; ties; config errors."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from fact_builder import d, fact_tables

from patron.errors import PatronError
from patron.projections.fact_tables import FactTables
from patron.projections.rfm import RFM_SCHEMA, build_rfm, load_rfm_config, rank_scores

AS_OF = datetime(2026, 3, 31, 17, 30, tzinfo=UTC)


def order(profile_id: str, days_before: int, orders: int, revenue: float) -> dict[str, object]:
    return {
        "profile_id": profile_id,
        "day": AS_OF.date() - timedelta(days=days_before),
        "orders": orders,
        "revenue": revenue,
    }


def by_profile(table: pa.Table) -> dict[str, dict[str, object]]:
    return {row["profile_id"]: row for row in table.to_pylist()}


def test_five_customers_get_exact_values_scores_and_segments() -> None:
    tables = fact_tables(
        orders_daily=[
            order("A", 0, 1, 10.0),  # bought on the as-of day itself: recency 0
            order("B", 3, 2, 30.0),
            order("C", 7, 1, 5.0),
            order("C", 40, 2, 15.0),
            order("D", 30, 2, 25.0),  # the same day twice: summed, one purchase day
            order("D", 30, 2, 15.0),
            order("E", 90, 5, 50.0),
            order("E", -1, 9, 999.0),  # the day after as-of: not counted
            order("F", -5, 1, 10.0),  # only after as-of: not a customer yet
        ]
    )
    rfm = build_rfm(tables, AS_OF)
    assert rfm.schema == RFM_SCHEMA
    assert rfm.column("profile_id").to_pylist() == ["A", "B", "C", "D", "E"]
    rows = by_profile(rfm)
    expected = {
        # id: (recency_days, frequency, monetary, cell, fm_score, segment)
        "A": (0, 1, 10.0, "5-1-1", 1, "New"),
        "B": (3, 2, 30.0, "4-2-3", 3, "Potential Loyalist"),
        "C": (7, 3, 20.0, "3-3-2", 3, "Need Attention"),
        "D": (30, 4, 40.0, "2-4-4", 4, "At Risk"),
        "E": (90, 5, 50.0, "1-5-5", 5, "Can't Lose Them"),
    }
    for profile_id, (recency, frequency, monetary, cell, fm_score, segment) in expected.items():
        row = rows[profile_id]
        r, f, m = (int(part) for part in cell.split("-"))
        assert (row["recency_days"], row["frequency"], row["monetary"]) == (recency, frequency, monetary)
        assert (row["r_score"], row["f_score"], row["m_score"]) == (r, f, m), profile_id
        assert (row["rfm_cell"], row["fm_score"], row["segment"]) == (cell, fm_score, segment), profile_id


def test_ties_share_a_score_and_leave_a_gap() -> None:
    tables = fact_tables(
        orders_daily=[
            order("p1", 0, 1, 10.0),
            order("p2", 5, 1, 10.0),
            order("p3", 5, 1, 10.0),
            order("p4", 9, 1, 10.0),
        ]
    )
    rows = by_profile(build_rfm(tables, AS_OF))
    # 1 + floor(5 * customers with a strictly worse value / 4): 3 worse -> 4; 1 worse -> 2 (both); none -> 1
    assert [rows[p]["r_score"] for p in ("p1", "p2", "p3", "p4")] == [4, 2, 2, 1]
    # everyone bought once for the same amount: nobody is worse, so all share the lowest score
    assert {rows[p]["f_score"] for p in rows} == {1}
    assert {rows[p]["m_score"] for p in rows} == {1}


def test_rank_scores_spread_distinct_values_over_equal_bins() -> None:
    scores = rank_scores(np.arange(1000, dtype=np.float64)[::-1], 5)
    assert np.bincount(scores).tolist() == [0, 200, 200, 200, 200, 200]
    assert scores[0] == 5 and scores[-1] == 1  # higher value, higher score


def test_row_order_does_not_change_the_result() -> None:
    rng = np.random.default_rng(7)
    n = 400
    rows = [
        order(
            f"p{rng.integers(0, 120)}",
            int(rng.integers(0, 200)),
            int(rng.integers(1, 4)),
            float(rng.integers(1, 50)),
        )
        for _ in range(n)
    ]
    first = build_rfm(fact_tables(orders_daily=rows), AS_OF)
    shuffled = build_rfm(fact_tables(orders_daily=[rows[i] for i in rng.permutation(n)]), AS_OF)
    assert first.equals(shuffled)
    assert first.num_rows == len({row["profile_id"] for row in rows})


def test_default_grid_names_every_cell_with_the_eleven_segments() -> None:
    config = load_rfm_config()
    assert config.bins == 5
    assert {name for row in config.segments.values() for name in row} == {
        "Champions",
        "Loyal",
        "Potential Loyalist",
        "New",
        "Promising",
        "Need Attention",
        "About to Sleep",
        "At Risk",
        "Can't Lose Them",
        "Hibernating",
        "Lost",
    }


def test_configurable_bins_and_grid(tmp_path: Path) -> None:
    path = tmp_path / "rfm.yaml"
    path.write_text(
        "bins: 3\nsegments:\n  3: [Fresh, Good, Best]\n  2: [Meh, Meh, Good]\n  1: [Gone, Gone, Save]\n"
    )
    tables = fact_tables(
        orders_daily=[
            order("a", 1, 3, 30.0),
            order("b", 50, 2, 20.0),
            order("c", 99, 1, 10.0),
            order("c", 100, 5, 500.0),
        ]
    )
    rows = by_profile(build_rfm(tables, AS_OF, load_rfm_config(path)))
    # a: most recent (3), f 3 orders vs b 2, c 6 -> 2; m 30 vs 20, 510 -> 2 -> fm 2
    assert (rows["a"]["rfm_cell"], rows["a"]["segment"]) == ("3-2-2", "Good")
    assert (rows["b"]["rfm_cell"], rows["b"]["segment"]) == ("2-1-1", "Meh")
    assert (rows["c"]["rfm_cell"], rows["c"]["segment"]) == ("1-3-3", "Save")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "bins: 2\nsegments:\n  2: [a, b]\n",
            "key '(top level)': segments needs exactly one row per r_score 1..2; missing [1]",
        ),
        (
            "bins: 2\nsegments:\n  2: [a, b]\n  1: [a]\n",
            "segments.1 must name 2 segments (fm_score 1..2), got 1",
        ),
        ("bins: 1\nsegments: {1: [a]}\n", "key 'bins': Input should be greater than or equal to 2"),
        ("bins: 2\nsegment: {}\n", "key 'segments': Field required"),
    ],
)
def test_invalid_config_names_the_file_and_the_problem(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "rfm.yaml"
    path.write_text(text)
    with pytest.raises(PatronError) as error:
        load_rfm_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: RFM settings") and expected in message


def test_no_orders_gives_an_empty_table_with_the_schema() -> None:
    rfm = build_rfm(fact_tables(orders_daily=[]), AS_OF)
    assert rfm.num_rows == 0 and rfm.schema == RFM_SCHEMA


def test_naive_as_of_is_utc_and_as_of_is_the_moment_after_the_last_included_day() -> None:
    tables: FactTables = fact_tables(orders_daily=[order("a", 0, 1, 1.0) | {"day": d("2026-03-31")}])
    aware = build_rfm(tables, datetime(2026, 3, 31, 23, 59, tzinfo=UTC))
    end_of_day = build_rfm(
        tables, datetime(2026, 4, 1, 0, 0)
    )  # what `patron snapshot --as-of 2026-03-31` passes
    assert aware.equals(end_of_day) and aware.column("recency_days").to_pylist() == [0]
    assert build_rfm(tables, datetime(2026, 3, 31, 0, 0)).num_rows == 0  # midnight: March 31st not begun
    before = build_rfm(tables, datetime.combine(date(2026, 3, 30), datetime.max.time(), UTC))
    assert before.num_rows == 0
