"""Patron: an event-sourced customer data platform.

The repository's top-level folders are installed as sub-packages of this one
(``schemas/`` as ``patron.schemas``, ``events/`` as ``patron.events`` ...) so that
generic names never collide with other distributions in site-packages.
"""

__version__ = "0.1.0"
