"""The topics segment evaluation writes to, and the source name of what it emits."""

SEGMENT_CHANGES_TOPIC = "patron.segment-changes"
"""``segment_entered`` / ``segment_exited``, keyed by profile id (one profile's transitions stay in order)."""
TRIGGERS_TOPIC = "patron.triggers"
"""``trigger_fired``, keyed by profile id."""
SEGMENTS_SOURCE = "patron.segments"
