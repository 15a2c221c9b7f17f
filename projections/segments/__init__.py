"""Segments and triggers: declarative conditions over profiles and scores, evaluated as profiles change."""
