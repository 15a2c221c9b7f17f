"""Connector plugins: found through the ``patron.connectors`` entry points, used by ``patron ingest``.

The test plugin is a real distribution on disk -- a module plus the ``*.dist-info`` folder
an installer writes (``METADATA`` and ``entry_points.txt``) -- on the path of the ``patron``
subprocess, so discovery runs through importlib.metadata exactly as for a pip-installed package.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from test_ingest import cli, patron, stored_events, stored_letters

from patron.connectors.plugins import ConnectorError, available_connectors, load_connector

PLUGIN = '''
"""Reads legacy ``user|email|signed_up`` exports."""
import uuid
from pathlib import Path

from patron.connectors.plugins import RecordStream, SourceRecord
from patron.errors import PatronError

NAMESPACE = uuid.UUID("6f1f0c7e-1d0b-4c5e-8f43-2b7f0c9d1a10")
FIELDS = {fields}  # how many fields a line may have: version 1 only knows the 3-field layout


def record(raw, location):
    parts = raw.decode().split("|")
    if len(parts) not in FIELDS:
        return SourceRecord(raw, location, error=f"expected 3 fields separated by |, got {{len(parts)}}")
    event = {{
        "envelope": {{
            "event_id": str(uuid.uuid5(NAMESPACE, raw.decode())),
            "event_type": "identify",
            "occurred_at": parts[2],
            "identifiers": {{"user_id": parts[0], "email": parts[1]}},
            "context": {{"channel": "batch"}},
        }},
        "payload": {{}},
    }}
    return SourceRecord(raw, location, event=event)


class PipesConnector:
    def open(self, target, options):
        path = Path(target)
        if not path.is_file():
            raise PatronError(f"{{target}}: no such export file")
        lines = path.read_bytes().splitlines()
        records = [record(line, f"{{path.name}}:line {{n}}") for n, line in enumerate(lines, 1) if line]
        return RecordStream(options.get("source", "legacy"), records)

    def replay(self, letter, options):
        return RecordStream(letter.source, [record(letter.raw, letter.location)])
'''
EXPORT = b"u1|ann@example.com|2024-05-01T10:00:00Z\nu2|bo@example.com|2024-05-02T10:00:00Z|VIP\n\nu3|not-an-email|2024-05-03T10:00:00Z\n"


def install_plugin(
    site: Path, *, fields: str = "(3,)", name: str = "pipes", target: str = "patron_pipes:PipesConnector"
) -> None:
    """What ``pip install`` leaves in site-packages: the module and its dist-info with the entry point."""
    site.mkdir(exist_ok=True)
    module = target.split(":")[0]
    (site / f"{module}.py").write_text(PLUGIN.format(fields=fields), encoding="utf-8")
    info = site / f"{module}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            f"""\
            [patron.connectors]
            {name} = {target}
            """
        ),
        encoding="utf-8",
    )


def test_a_plugin_found_through_its_entry_point_ingests_and_replays_its_letters(tmp_path, data_dir):
    site = tmp_path / "site"
    install_plugin(site)
    env = {"PYTHONPATH": str(site)}
    export = tmp_path / "export.txt"
    export.write_bytes(EXPORT)

    result = patron(
        data_dir,
        "ingest",
        str(export),
        "--connector",
        "pipes",
        "--option",
        "source=legacy",
        "--json",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    [counts] = json.loads(result.stdout)["targets"]
    assert (counts["read"], counts["accepted"], counts["rejected"]) == (3, 1, 2)
    [event] = stored_events(data_dir)
    assert event["envelope"]["source"] == "legacy"  # the stream's source, filled in by the shared path
    assert event["envelope"]["identifiers"]["user_id"] == "u1"
    letters = {letter.location: letter for letter in stored_letters(data_dir)}
    assert {letter.connector for letter in letters.values()} == {"pipes"}
    assert letters["export.txt:line 2"].reason == "expected 3 fields separated by |, got 4"
    assert letters["export.txt:line 4"].reason.startswith("envelope.identifiers.email: 'not-an-email'")

    install_plugin(site, fields="(3, 4)")  # version 2 of the plugin accepts the extra field
    replayed = patron(data_dir, "dlq", "replay", env=env)
    assert replayed.returncode == 3, replayed.stderr
    assert "1 resolved, 1 still failing." in replayed.stdout
    assert sorted(e["envelope"]["identifiers"]["user_id"] for e in stored_events(data_dir)) == ["u1", "u2"]

    missing = patron(data_dir, "ingest", str(tmp_path / "nope.txt"), "-c", "pipes", env=env)
    assert (missing.returncode, missing.stderr.strip()) == (
        2,
        f"error: {tmp_path / 'nope.txt'}: no such export file",
    )


def test_the_built_in_connectors_are_registered_entry_points():
    assert {"file", "segment"} <= set(available_connectors())
    assert type(load_connector("file")).__name__ == "FileConnector"


def test_an_unknown_connector_names_the_installed_ones(tmp_path, data_dir):
    code, _, error = cli(data_dir, "ingest", str(tmp_path), "--connector", "fiel")
    assert code == 2
    assert error.startswith("unknown connector 'fiel' (did you mean file?); installed: ")
    assert {"file", "segment"} <= set(error.split("installed: ")[1].split(" (")[0].split(", "))


def test_a_plugin_that_does_not_load_or_is_not_a_connector_is_reported(tmp_path, monkeypatch):
    site = tmp_path / "site"
    install_plugin(site, name="broken", target="patron_missing_module:Nothing")
    (site / "patron_missing_module.py").write_text("import no_such_dependency\n", encoding="utf-8")
    install_plugin(site, name="notaconnector", target="patron_pipes:FIELDS")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(
        ConnectorError,
        match=r"connector 'broken' \(patron_missing_module:Nothing\) failed to load: "
        r"ModuleNotFoundError: No module named 'no_such_dependency'",
    ):
        load_connector("broken")
    with pytest.raises(
        ConnectorError, match=r"connector 'notaconnector' \(patron_pipes:FIELDS\) has no open"
    ):
        load_connector("notaconnector")


def test_the_segment_connector_ingests_exported_messages(tmp_path, data_dir):
    messages = tmp_path / "messages.jsonl"
    messages.write_text(
        "\n".join(
            json.dumps(m)
            for m in (
                {
                    "type": "identify",
                    "messageId": "m1",
                    "userId": "u1",
                    "traits": {"email": "A@X.com"},
                    "timestamp": "2024-05-01T10:00:00Z",
                },
                {
                    "type": "track",
                    "messageId": "m2",
                    "timestamp": "2024-05-01T10:00:00Z",
                    "event": "Signed In",
                },
            )
        ),
        encoding="utf-8",
    )
    code, out, _ = cli(data_dir, "ingest", str(messages), "-c", "segment", "-o", "source=web", "--json")
    assert code == 0
    totals = json.loads(out)["totals"]
    assert (totals["accepted"], totals["rejected"]) == (1, 1)
    [event] = stored_events(data_dir)
    assert event["envelope"]["identifiers"]["email"] == "a@x.com"
    assert stored_letters(data_dir)[0].reason.startswith("userId or anonymousId is required")
    code, _, error = cli(data_dir, "ingest", str(messages), "-c", "segment")
    assert (code, error) == (
        2,
        f"{messages}: the segment connector needs the source name: --option source=NAME",
    )
