"""Text normalisation for probabilistic matching: the same person spelled by two systems compares equal.

Sources disagree on case, accents, punctuation and order ("JOHN SMITH", "Smith, John", "Müller" vs
"Mueller"). Comparing raw text would count every such difference as evidence of two people, so every
value is folded once per record, before any pair is compared.
"""

from __future__ import annotations

import re
import unicodedata

# German spells umlauts out when a keyboard or system lacks them (Müller = Mueller), so fold them the
# same way rather than to the bare vowel that NFKD would leave ("Muller").
SPELLED_OUT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "ae", "Ö": "oe", "Ü": "ue"})
NOT_WORD = re.compile(r"[^0-9a-z]+")
NOT_DIGIT = re.compile(r"\D+")


def fold(text: str | None) -> str:
    """Lower-case ASCII words separated by single spaces: 'Müller-Lüdenscheidt, J.' -> 'mueller luedenscheidt j'."""
    if not text:
        return ""
    spelled = unicodedata.normalize("NFKD", text.translate(SPELLED_OUT))
    ascii_text = spelled.encode("ascii", "ignore").decode().lower()
    return NOT_WORD.sub(" ", ascii_text).strip()


def split_name(full: str | None) -> tuple[str, str]:
    """(first, last) of a full name as sources write it: 'Smith, John', 'J. Smith', 'JOHN SMITH'.

    A comma means "last, first" (CRM exports); otherwise the last word is the family name. The parts
    keep their spelling (explanations show them); ``fold`` them to compare.
    """
    if not full or not full.strip():
        return "", ""
    if "," in full:
        last, _, first = full.partition(",")
        return first.strip(), last.strip()
    words = full.split()
    return " ".join(words[:-1]), words[-1]


def email_local(email: str) -> str:
    """The comparable part of an address's local part: no '+tag', no dots or other separators."""
    local = email.partition("@")[0].partition("+")[0]
    return fold(local).replace(" ", "")


def digits(text: str | None) -> str:
    return NOT_DIGIT.sub("", text or "")
