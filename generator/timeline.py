"""Customer lifecycles and the sampling of event times inside them.

A customer is active from signup until churn and, if they come back, again from reactivation
on; every source draws its events only inside those active spans (clipped to the generated
window), so churned customers really fall silent and projections computed later find signal.
Times of day follow one diurnal profile (quiet nights, busy evenings).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from patron.generator.timefmt import US_PER_DAY, US_PER_HOUR

NEVER = np.iinfo(np.int64).max // 4
# Relative activity per hour of day (UTC), evening peak.
DIURNAL = np.array(
    [2, 1, 1, 1, 1, 2, 4, 6, 8, 9, 9, 9, 10, 10, 9, 9, 10, 11, 13, 14, 13, 10, 7, 4], dtype=float
)


@dataclass(frozen=True)
class Window:
    """The generated period ``[start, end)`` in microseconds since the epoch."""

    start: int
    end: int

    @property
    def days(self) -> float:
        return (self.end - self.start) / US_PER_DAY


@dataclass(frozen=True)
class Lifecycle:
    """Per customer: signup, churn and reactivation instants (``NEVER`` when it does not happen)."""

    signup: np.ndarray
    churn: np.ndarray
    reactivate: np.ndarray

    def spans(self, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Start and length (microseconds) of the two active spans of every customer inside ``window``."""
        first_start = np.clip(self.signup, window.start, window.end)
        first_length = np.clip(np.minimum(self.churn, window.end) - first_start, 0, None)
        second_start = np.clip(self.reactivate, window.start, window.end)
        second_length = np.clip(window.end - second_start, 0, None)
        return first_start, first_length, second_start, second_length

    def active_days(self, window: Window) -> np.ndarray:
        """How many days each customer is active inside ``window``."""
        _, first_length, _, second_length = self.spans(window)
        return (first_length + second_length) / US_PER_DAY

    def active_at(self, moments: np.ndarray, who: np.ndarray) -> np.ndarray:
        """Whether customer ``who[i]`` is active at ``moments[i]``."""
        first = (moments >= self.signup[who]) & (moments < self.churn[who])
        return first | (moments >= self.reactivate[who])


def categorical(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    """``n`` draws of an index with the given relative ``weights`` (faster than ``rng.choice`` with ``p``)."""
    cumulative = np.cumsum(weights, dtype=float)
    return np.searchsorted(cumulative, rng.random(n) * cumulative[-1], side="right")


def sample_lifecycles(
    n: int, window: Window, satisfaction: np.ndarray, rng: np.random.Generator
) -> Lifecycle:
    """Signups spread over the year before and the window itself; unhappy customers churn sooner."""
    history = 365 * US_PER_DAY
    signup = rng.integers(window.start - history, window.end, size=n)
    lifetime_days = rng.exponential(420.0 * np.exp(0.45 * satisfaction))
    churn = signup + (lifetime_days * US_PER_DAY).astype(np.int64)
    comes_back = rng.random(n) < 0.2
    away_days = 14 + rng.exponential(75.0, size=n)
    reactivate = np.where(comes_back, churn + (away_days * US_PER_DAY).astype(np.int64), NEVER)
    return Lifecycle(signup=signup, churn=churn, reactivate=reactivate)


def sample_times(
    life: Lifecycle, window: Window, rate_per_day: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson many events per customer at ``rate_per_day`` while active; returns (owner, time) by time.

    The day is uniform over the active spans, the hour follows :data:`DIURNAL`.
    """
    first_start, first_length, second_start, second_length = life.spans(window)
    counts = rng.poisson(np.asarray(rate_per_day) * life.active_days(window))
    owner = np.repeat(np.arange(len(counts)), counts)
    offset = (rng.random(len(owner)) * (first_length + second_length)[owner]).astype(np.int64)
    in_first = offset < first_length[owner]
    moment = np.where(
        in_first, first_start[owner] + offset, second_start[owner] + offset - first_length[owner]
    )
    day_start = moment - (moment - window.start) % US_PER_DAY
    hour = categorical(rng, DIURNAL, len(owner))
    within = (rng.random(len(owner)) * US_PER_HOUR).astype(np.int64)
    moment = day_start + hour * US_PER_HOUR + within
    # Re-placing the hour can step out of a span by less than a day; keep only what stays inside.
    keep = life.active_at(moment, owner) & (moment >= window.start) & (moment < window.end)
    owner, moment = owner[keep], moment[keep]
    order = np.argsort(moment, kind="stable")
    return owner[order], moment[order]
