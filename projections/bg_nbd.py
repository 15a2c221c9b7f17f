"""BG/NBD: how many purchases a customer will make and whether they are still "alive".

Fader, Hardie and Lee (2005), "Counting Your Customers the Easy Way: An Alternative to the
Pareto/NBD Model". While alive a customer buys as a Poisson process with rate lambda ~
Gamma(r, alpha); after each purchase they drop out with probability p ~ Beta(a, b). Inputs per
customer: x repeat purchases, t_x the time of the last one and T the age, both measured from the
first purchase (in days here). All formulas are evaluated in log space (gammaln, logaddexp) so a
customer with hundreds of purchases does not overflow.
"""

from __future__ import annotations

import numpy as np
from scipy.special import digamma, expit, gammaln, hyp2f1

from patron.projections.model_fit import Fit, Levels, Parametrisation, distinct_rows, maximise

PARAMS = ("r", "alpha", "a", "b")
SERIES_TERMS = 20_000
LN10 = float(np.log(10))


def _natural(u: np.ndarray) -> np.ndarray:
    r, kappa, mean_drop = np.exp(u[0]), np.exp(u[3]), expit(u[2])
    return np.array([r, r * np.exp(-u[1]), kappa * mean_drop, kappa * (1 - mean_drop)])


def _chain(u: np.ndarray, g: np.ndarray) -> np.ndarray:
    r, alpha, a, b = _natural(u)
    return np.array(
        [g[0] * r + g[1] * alpha, -g[1] * alpha, (g[2] - g[3]) * a * b / (a + b), g[2] * a + g[3] * b]
    )


# Coordinates: log r (rate heterogeneity: the rate's shape), log r/alpha (the mean purchase rate),
# logit a/(a+b) (the mean drop-out probability), log a+b (drop-out heterogeneity).
SPACE = Parametrisation(
    coordinates=("r", "r/alpha", "a/(a+b)", "a+b"),
    bounds=((-12.0, 12.0), (-30.0, 30.0), (-30.0, 30.0), (-12.0, 12.0)),
    natural=_natural,
    chain=_chain,
    bound_note="a large r or a+b means customers barely differ in purchase rate or drop-out chance",
)


def _log_likelihood(params: np.ndarray, x: Levels, t_x: Levels, T: Levels) -> tuple[np.ndarray, np.ndarray]:
    r, alpha, a, b = params
    xs = x.rows()
    repeat = xs > 0
    log_at_T = T.apply(lambda v: np.log(alpha + v))
    log_at_tx = t_x.apply(lambda v: np.log(alpha + v))
    log_b_x1 = x.apply(lambda v: np.log(b + np.maximum(v, 1) - 1))
    base = x.apply(lambda v: gammaln(r + v) + gammaln(b + v) - gammaln(a + b + v)) + (
        -gammaln(r) + r * np.log(alpha) + gammaln(a + b) - gammaln(b)
    )
    a3 = -(r + xs) * log_at_T
    a4 = np.where(repeat, np.log(a) - log_b_x1 - (r + xs) * log_at_tx, -np.inf)
    tail = np.logaddexp(a3, a4)
    w4 = np.exp(a4 - tail)  # share of the "dropped out right after t_x" branch; 0 for x == 0
    w3 = 1.0 - w4
    grad = np.stack(
        [
            x.apply(lambda v: digamma(r + v)) - digamma(r) + np.log(alpha) - w3 * log_at_T - w4 * log_at_tx,
            r / alpha
            - (r + xs)
            * (w3 * T.apply(lambda v: 1 / (alpha + v)) + w4 * t_x.apply(lambda v: 1 / (alpha + v))),
            digamma(a + b) - x.apply(lambda v: digamma(a + b + v)) + w4 / a,
            digamma(a + b)
            - digamma(b)
            + x.apply(lambda v: digamma(b + v) - digamma(a + b + v))
            - w4 * np.exp(-log_b_x1),
        ]
    )
    return base + tail, grad


def log_likelihood(
    params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-customer log-likelihood (FHL 2005 eq. 6) and its gradient w.r.t. (r, alpha, a, b)."""
    return _log_likelihood(params, Levels.of(x), Levels.of(t_x), Levels.of(T))


def fit(x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> Fit:
    """Maximum-likelihood fit; identical (x, t_x, T) rows are evaluated once with a weight.

    Daily data repeat a lot (every one-time buyer of the same day is the same row), so this
    cuts a million customers to far fewer distinct rows, and x, t_x and T each take few distinct
    values, so the special functions run per distinct value (see ``Levels``).
    """
    columns = (Levels.of(x), Levels.of(t_x), Levels.of(T))
    rows, counts = distinct_rows(columns)
    x, t_x, T = (column.take(rows) for column in columns)
    return maximise("bg_nbd", PARAMS, SPACE, lambda p: _log_likelihood(p, x, t_x, T), counts)


def p_alive(params: dict[str, float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """P(still alive at T | x, t_x, T) (FHL 2005 eq. 11); 1 for customers with no repeat purchase."""
    r, alpha, a, b = (params[name] for name in PARAMS)
    log_odds_dead = (r + x) * np.log((alpha + T) / (alpha + t_x)) + np.log(a / (b + np.maximum(x, 1) - 1))
    return np.where(x > 0, expit(-log_odds_dead), 1.0)


def _log_hyp2f1_series(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, z: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(sign, log |2F1|) summed term by term, rescaled as it grows; NaN where SERIES_TERMS do not converge.

    scipy's hyp2f1 gives NaN for a very large first argument, which is exactly what a fit at the
    r bound produces (r ~ 1e5, z ~ 1e-5): there the terms peak after about a*z of them and the
    sum converges soon after. Rows leave the loop as they converge.
    """
    sign, log_abs = np.ones(len(z)), np.full(len(z), np.nan)
    rows = np.arange(len(z))
    total, term, log_scale = np.ones(len(z)), np.ones(len(z)), np.zeros(len(z))
    for n in range(1, SERIES_TERMS + 1):
        term = term * ((a + n - 1) * (b + n - 1) / ((c + n - 1) * n) * z)
        total = total + term
        big = np.abs(total) > 1e200
        total[big], term[big], log_scale[big] = (
            total[big] * 1e-200,
            term[big] * 1e-200,
            log_scale[big] + 200 * LN10,
        )
        done = (np.abs(term) <= 1e-17 * np.abs(total)) & (n > a * z)
        if done.any():
            sign[rows[done]] = np.sign(total[done])
            log_abs[rows[done]] = np.log(np.abs(total[done])) + log_scale[done]
            keep = ~done
            rows, a, b, c, z, total, term, log_scale = (
                v[keep] for v in (rows, a, b, c, z, total, term, log_scale)
            )
            if not len(rows):
                break
    return sign, log_abs


def _log_hyp2f1(a: np.ndarray, b: np.ndarray, c: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sign, log |2F1(a, b; c; z)|) for 0 <= z < 1 (negative when c < 0): scipy, then Euler's
    transformation where that overflows, then the plain series where scipy gives up (a huge a)."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        direct = hyp2f1(a, b, c, z)
        euler = hyp2f1(c - a, c - b, c, z)
        sign = np.where(np.isfinite(direct), np.sign(direct), np.sign(euler))
        log_abs = np.where(
            np.isfinite(direct), np.log(np.abs(direct)), np.log(np.abs(euler)) + (c - a - b) * np.log1p(-z)
        )
    missing = ~np.isfinite(log_abs)
    if missing.any():
        a, b, c, z = (np.broadcast_to(v, log_abs.shape)[missing] for v in (a, b, c, z))
        sign[missing], log_abs[missing] = _log_hyp2f1_series(a, b, c, z)
    return sign, log_abs


def expected_purchases(
    params: dict[str, float], t: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """E[purchases in (T, T + t] | x, t_x, T] (FHL 2005 eq. 10), t in the same unit as T."""
    r, alpha, a, b = (params[name] for name in PARAMS)
    z = t / (alpha + T + t)
    sign, log_h = _log_hyp2f1(r + x, b + x, a + b + x - 1, z)
    scale = (a + b + x - 1) / (a - 1)
    log_term = log_h + (r + x) * np.log((alpha + T) / (alpha + T + t))
    # 1 - sign * e^log_term, with expm1 keeping precision when the two nearly cancel
    unconditional = scale * np.where(sign > 0, -np.expm1(log_term), 1 + np.exp(log_term))
    return unconditional * p_alive(params, x, t_x, T)
