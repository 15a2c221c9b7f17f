"""``patron generate``: the whole multi-source data set, its mappings, ground truth and manifest.

Every component draws from its own random stream, derived from the seed and the component's
name, so the same seed gives byte-identical files and changing one source leaves the others
as they were. ``manifest.json`` holds no timing or host detail for the same reason.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from patron.generator.activity import simulate_activity
from patron.generator.billing import billing
from patron.generator.dirt import DUPLICATE_RATE, DirtPlan, plan_dirt
from patron.generator.mappings import write_mapping
from patron.generator.marketing import marketing
from patron.generator.people import build_population
from patron.generator.sales import crm_contacts, leads
from patron.generator.shop import shop_orders
from patron.generator.source import Source
from patron.generator.support import support
from patron.generator.timefmt import US_PER_DAY, US_PER_SECOND
from patron.generator.timeline import Window
from patron.generator.web import collector_batch, web_events
from patron.generator.writers import GroundTruth, write_source

MANIFEST = "manifest.json"
GROUND_TRUTH = "ground_truth.csv"
MAPPINGS_DIR = "mappings"
# (what is being done, records done so far, records in total)
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Parameters:
    """What ``patron generate`` was asked for; the manifest repeats it."""

    customers: int
    days: int
    seed: int
    start: date
    malformed_rate: float = 0.01
    duplicate_rate: float = DUPLICATE_RATE

    @property
    def window(self) -> Window:
        begin = int(datetime.combine(self.start, time(), UTC).timestamp()) * US_PER_SECOND
        return Window(begin, begin + self.days * US_PER_DAY)


def stream(seed: int, name: str) -> np.random.Generator:
    """The random stream of one component (independent of every other component's draws)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def build_sources(params: Parameters) -> tuple[list[Source], pa.Array]:
    """All generated files as sources (numbers only; rendering happens while writing), and person ids."""
    window, seed = params.window, params.seed
    pop = build_population(params.customers, window, stream(seed, "people"))
    activity = simulate_activity(pop, window, stream(seed, "activity"))
    app = pop.devices.is_app[activity.device]
    tickets, surveys = support(pop, window, stream(seed, "support"))
    email, consent = marketing(pop, window, stream(seed, "marketing"), salt=seed * 31 + 5)
    return [
        web_events(activity.subset(np.flatnonzero(~app)), pop, salt=seed * 31 + 1),
        shop_orders(pop, window, stream(seed, "shop"), salt=seed * 31 + 2),
        crm_contacts(pop, window, stream(seed, "crm")),
        tickets,
        surveys,
        email,
        billing(pop, window, stream(seed, "billing"), salt=seed * 31 + 3),
        consent,
        leads(pop, window, stream(seed, "leads")),
        collector_batch(activity.subset(np.flatnonzero(app)), pop, salt=seed * 31 + 4),
    ], pop.person_id


def _file_summary(source: Source, plan: DirtPlan) -> dict[str, Any]:
    """Counts for the manifest: records as written, and the events the clean originals yield.

    ``events`` counts the clean, first-sent records only; re-sends and broken records are
    counted apart, so ``events`` is exactly what ingestion should accept from intact records.
    """
    clean = plan.kind < 0
    copies = plan.order[plan.duplicate_of >= 0]

    def count(rows: np.ndarray) -> dict[str, int]:
        return {name: int(mask[rows].sum()) for name, mask in source.events.items()}

    return {
        "format": source.format,
        "connector": source.connector,
        "mapping": f"{MAPPINGS_DIR}/{source.stem}.yaml" if source.mapping else None,
        "records": len(plan.order),
        "unique_records": source.size,
        "duplicates": len(copies),
        "malformed": int((~clean).sum()),
        "events": count(clean),
        "events_in_duplicates": count(copies),
        # What the broken records would have yielded: the DLQ gets them (all or some of their events).
        "events_in_malformed": count(~clean),
    }


def generate_dataset(params: Parameters, out: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Write the data set to ``out`` and return the manifest."""
    report = progress or (lambda label, done, total: None)
    report("simulating customers", 0, 0)
    sources, person_ids = build_sources(params)
    rate, duplicates = params.malformed_rate, params.duplicate_rate
    plans = [
        plan_dirt(s.size, len(s.malformations), rate, stream(params.seed, f"dirt:{s.file}"), duplicates)
        for s in sources
    ]
    total = sum(len(plan.order) for plan in plans)
    out.mkdir(parents=True, exist_ok=True)
    truth = GroundTruth(out / GROUND_TRUTH)
    done = 0
    files: dict[str, Any] = {}
    try:
        for source, plan in zip(sources, plans, strict=True):

            def advance(count: int, label: str = source.file) -> None:
                nonlocal done
                done += count
                report(label, done, total)

            write_source(source, plan, out / source.file, person_ids, truth, advance)
            if source.mapping:
                write_mapping(out / MAPPINGS_DIR / f"{source.stem}.yaml", source.mapping)
            files[source.file] = _file_summary(source, plan)
    finally:
        truth.close()
    totals: Counter[str] = Counter()
    for summary in files.values():
        totals.update(summary["events"])
    window = params.window
    manifest = {
        "generator": "patron generate",
        "parameters": asdict(params) | {"start": params.start.isoformat()},
        "window": {
            "start": datetime.fromtimestamp(window.start / US_PER_SECOND, UTC).isoformat(),
            "end": datetime.fromtimestamp(window.end / US_PER_SECOND, UTC).isoformat(),
        },
        "ground_truth": GROUND_TRUTH,
        "files": files,
        "event_types": dict(sorted(totals.items())),
        "events_total": sum(totals.values()),
        "records_total": total,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
