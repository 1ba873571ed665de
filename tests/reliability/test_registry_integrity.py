"""The registry is never silently overwritten (issue: trust, section 2).

A registry object that exists but is not a usable document (empty, truncated, garbage, a
newer format, a view without a required field) is refused by every reader and writer with
one message naming its URI, what is wrong and how to fix it; the registry, its history,
the lake and the online store stay exactly as they were. Only an absent registry means
"nothing published", and the history archive stays append-only and consistent with what
was published at each serial.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from sync.errors import FeatureStoreError
from sync.feature_store import FeatureStore
from sync.registry import FORMAT_VERSION
from sync.serving.http import ServerSettings, create_app
from tests.reliability.state import assert_unchanged, snapshot
from tests.reliability.tmpfs import full_tmpfs

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

SPINE = "select 1 as customer_id, timestamp '2026-10-01' as event_timestamp"
# every read path of the CLI: each must refuse an unusable registry
CLI_READS = {
    "publish": ("publish",),
    "plan": ("plan",),
    "materialize": ("materialize",),
    "lookup": ("lookup", "customer_id=1"),
    "show": ("show",),
    "historical": ("historical", SPINE, "-f", "customer_spend:amount_sum_7d"),
}


def _edit(change: Callable[[dict], object]) -> Callable[[bytes], bytes]:
    def apply(good: bytes) -> bytes:
        doc = json.loads(good)
        change(doc)
        return json.dumps(doc, indent=2).encode()
    return apply


# id -> (the broken registry made from the good bytes, what the message must say is wrong)
BROKEN: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "empty-object": (lambda good: b"{}", "empty JSON object"),
    "empty-array": (lambda good: b"[]\n", "it is a JSON array"),
    "empty-file": (lambda good: b"", "it is empty (0 bytes)"),
    "truncated": (lambda good: good[: len(good) // 2], "not valid JSON"),
    "garbage": (lambda good: bytes(range(256)) * 4, "not valid JSON"),
    "newer-format": (_edit(lambda d: d.update(format_version=FORMAT_VERSION + 1)),
                     f"format_version is {FORMAT_VERSION + 1}, newer than"),
    "view-without-version": (_edit(lambda d: d["feature_views"]["customer_spend"].pop("version")),
                             "feature view 'customer_spend' has no 'version'"),
    "feature-without-type": (_edit(lambda d: d["feature_views"]["merchant_risk"]["features"][0].pop("data_type")),
                             "feature view 'merchant_risk': feature 'risk_score': data_type is missing"),
}


def _fix_of(case: str, project) -> list[str]:
    """What the message must tell the user to do."""
    if case == "newer-format":
        return ["upgrade feature-store-sync"]
    return ["restore the last good document", str(project.lake / "registry-history" / "00000001.json")]


def _refused(text: str, returncode: int, project, case: str) -> None:
    assert returncode == 1, text
    assert "internal error" not in text and "Traceback" not in text, text
    for needle in [f"the registry at {project.registry_path} is unusable", BROKEN[case][1], *_fix_of(case, project)]:
        assert needle in text, f"{needle!r} not in:\n{text}"


@pytest.mark.parametrize("case", list(BROKEN))
def test_an_unusable_registry_is_refused_by_every_reader(project, case):
    """Every read path (CLI commands, FeatureStore, the HTTP server's start-up) refuses it."""
    original = snapshot(project.lake)  # with the online values of sampled entities
    good = project.registry_path.read_bytes()
    project.registry_path.write_bytes(BROKEN[case][0](good))
    before = snapshot(project.lake, with_online=False)  # the online store is read with the good registry below

    for name, args in CLI_READS.items():
        proc: subprocess.CompletedProcess = project.sync(*args)
        _refused(f"[{name}] {proc.stdout}{proc.stderr}", proc.returncode, project, case)
    for name, open_store in {
        "FeatureStore": lambda: FeatureStore(project.dir, lake=str(project.lake)).list_feature_views(),
        "FeatureStore(registry=)": lambda: FeatureStore(registry=str(project.registry_path)).serial,
        "create_app": lambda: create_app(ServerSettings(project_dir=str(project.dir), lake=str(project.lake))),
    }.items():
        with pytest.raises(FeatureStoreError) as err:
            open_store()
        _refused(f"[{name}] {err.value}", 1, project, case)

    assert_unchanged(before, snapshot(project.lake, with_online=False))
    # ... and, with the good document back, everything is as it was: no online value was
    # purged or written under the broken one
    project.registry_path.write_bytes(good)
    assert_unchanged(original, snapshot(project.lake))


def test_a_damaged_archive_is_refused_naming_it(project):
    """`FeatureStore(serial=N)` reads the archive: a damaged copy is refused the same way."""
    archived = project.lake / "registry-history" / "00000001.json"
    archived.write_bytes(archived.read_bytes()[:100])
    before = snapshot(project.lake)
    with pytest.raises(FeatureStoreError) as err:
        FeatureStore(project.dir, lake=str(project.lake), serial=1).list_feature_views()
    for needle in (f"the archived registry at {archived} is unusable", "not valid JSON",
                   "restore the lake's registry-history from a backup"):
        assert needle in str(err.value), f"{needle!r} not in {err.value}"
    assert_unchanged(before, snapshot(project.lake))


def _history(lake: Path) -> dict[int, bytes]:
    return {int(p.stem): p.read_bytes() for p in sorted((lake / "registry-history").glob("*.json"))}


def _published(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_an_absent_registry_is_nothing_published_and_history_numbers_on(project):
    """Deleting registry.json is the one way to start over: publish writes a fresh document,
    numbered past the archive, so no serial ever names two documents."""
    history = _history(project.lake)
    project.registry_path.unlink()
    _published(project.sync("publish"))
    doc = json.loads(project.registry_path.read_bytes())
    assert doc["serial"] == max(history) + 1
    after = _history(project.lake)
    assert {s: after[s] for s in history} == history  # append-only
    assert json.loads(after[doc["serial"]]) == doc


def test_a_registry_restored_from_an_older_archive_numbers_past_the_archive(project):
    """The documented fix (copy an archived document back) never makes a serial mean two documents."""
    _published(project.sync("publish"))  # serial 2
    first = project.lake / "registry-history" / "00000001.json"
    history = _history(project.lake)
    shutil.copyfile(first, project.registry_path)  # back to serial 1
    _published(project.sync("show"))
    _published(project.sync("publish"))
    doc = json.loads(project.registry_path.read_bytes())
    assert doc["serial"] == 3
    after = _history(project.lake)
    assert {s: after[s] for s in history} == history
    assert json.loads(after[3]) == doc


def test_the_history_catches_up_after_a_publish_that_could_not_archive(project, tmp_path):
    """The archive copy failed after the swap (a full disk, here a full tmpfs): the error says
    the registry was published but not archived, and the next publish archives it."""
    history_dir = project.lake / "registry-history"
    history = _history(project.lake)
    with full_tmpfs(history_dir, tmp_path) as free:
        proc = project.sync("publish")
        text = proc.stdout + proc.stderr
        assert proc.returncode == 1 and "Traceback" not in text, text
        for needle in (f"the registry at {project.registry_path} was published (serial 2) but not archived",
                       f"cannot write {history_dir / '00000002.json'}: no space left on the device",
                       "free space", "the next publish archives it"):
            assert needle in text, f"{needle!r} not in:\n{text}"
        assert json.loads(project.registry_path.read_bytes())["serial"] == 2
        free()
        _published(project.sync("publish"))
        after = _history(project.lake)
    assert set(after) == {*history, 2, 3} and {s: after[s] for s in history} == history
    assert json.loads(after[2])["serial"] == 2
    assert json.loads(after[3]) == json.loads(project.registry_path.read_bytes())
