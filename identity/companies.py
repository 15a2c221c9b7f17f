"""Company names as one comparable form: 'Acme Corp', 'ACME Corporation' and 'Acme' are one company.

Systems spell an employer with or without its legal form, in capitals, with '&' or 'und', abbreviated
('Vandelay Ind.') or run together ('PiedPiper'). None of that says "another company", so it is removed
or bridged before the similarity is computed.
"""

from __future__ import annotations

from rapidfuzz import fuzz

from patron.identity.text import fold

# fmt: off
LEGAL_FORMS = frozenset((
    "corp", "corporation", "inc", "incorporated", "co", "company", "ltd", "limited", "llc", "plc", "llp", "lp",
    "gmbh", "mbh", "ag", "kg", "ohg", "gbr", "ug", "se", "sa", "sas", "sarl", "srl", "spa", "bv", "nv", "oy",
    "ab", "as", "aps", "pty", "pvt",
))
# fmt: on
"""Legal-form words, folded ('GmbH & Co. KG' arrives as 'gmbh co kg'; dots are dropped first, so 'L.L.C.' is 'llc')."""
CONNECTORS = frozenset({"and", "und", "et", "the"})
MIN_ABBREVIATION = 3
"""Shortest word taken as an abbreviation of a longer one ('Ind' for 'Industries', not 'A' for 'Acme')."""


def normalise_company(name: str | None) -> str:
    """Folded words without legal forms and connectors: 'Bergmann & Söhne KG' -> 'bergmann soehne'.

    A name that is nothing but legal-form words keeps them, so 'AG' alone does not vanish into ''.
    """
    words = fold((name or "").replace(".", "")).split()
    kept = [word for word in words if word not in LEGAL_FORMS and word not in CONNECTORS]
    return " ".join(kept or words)


def _expanded(words: list[str], other: list[str]) -> list[str]:
    """``words`` with each abbreviation of a word of ``other`` replaced by that word ('ind' -> 'industries')."""
    out = []
    for word in words:
        longer = [
            o for o in other if len(word) >= MIN_ABBREVIATION and len(o) > len(word) and o.startswith(word)
        ]
        out.append(longer[0] if longer else word)
    return out


def company_similarity(a: str, b: str) -> float:
    """Similarity in [0, 1] of two *normalised* company names.

    The best of: word-set similarity after expanding abbreviations (one name's words a subset of the
    other's counts as the same company: 'Schneider' and 'Schneider Maschinenbau'), and the names with
    spaces removed ('piedpiper' vs 'pied piper').
    """
    if not a or not b:
        return 0.0
    if a == b:
        return 1.0
    words_a, words_b = a.split(), b.split()
    expanded_a, expanded_b = " ".join(_expanded(words_a, words_b)), " ".join(_expanded(words_b, words_a))
    joined = fuzz.ratio(a.replace(" ", ""), b.replace(" ", ""))
    return max(fuzz.token_set_ratio(expanded_a, expanded_b), joined) / 100.0
