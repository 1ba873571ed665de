"""Clear errors where an "internal error" remained (issue: trust, section 8).

Each case is reproduced for real (real dbt, real files, a real full filesystem) and must
end with one message naming the object and what to do, a non-zero exit, and nothing
changed: registry bytes and history, lake files, online values of sampled entities.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.reliability.state import assert_unchanged, snapshot
from tests.reliability.tmpfs import full_tmpfs

pytestmark = [pytest.mark.slow, pytest.mark.reliability]


def assert_refused(proc: subprocess.CompletedProcess, *needles: str) -> None:
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "internal error" not in text and "Traceback" not in text, text
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text}"


def refused_and_unchanged(project, args: tuple[str, ...], *needles: str, online: bool = True) -> None:
    before = snapshot(project.lake, with_online=online)
    assert_refused(project.sync(*args), *needles)
    assert_unchanged(before, snapshot(project.lake, with_online=online))


def settle(project) -> None:
    """Publish once as it is: the clone's first publish refreshes the Lance copy of the
    embedding view (its fingerprint names the files' paths, which moved with the clone), a
    write the failing publish below must not be blamed for."""
    proc = project.sync("publish")
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- the manifest -------------------------------------------------------------------------
MANIFESTS: dict[str, tuple[Callable[[dict], None], str]] = {
    "nodes-list": (lambda d: d.update(nodes=[]), "'nodes' is a list, expected an object"),
    "node-not-object": (lambda d: d["nodes"].update({"model.feature_store.merchant_risk": []}),
                        "nodes['model.feature_store.merchant_risk'] is a list, expected an object"),
    "exposures-list": (lambda d: d.update(exposures=[]), "'exposures' is a list, expected an object"),
    "columns-list": (lambda d: d["nodes"]["model.feature_store.merchant_risk"].update(columns=["merchant_id"]),
                     "nodes['model.feature_store.merchant_risk'].columns is a list, expected an object"),
    "meta-string": (lambda d: d["nodes"]["model.feature_store.merchant_risk"]["config"].update(meta="risk"),
                    "nodes['model.feature_store.merchant_risk'].config.meta is a string, expected an object"),
}


@pytest.mark.parametrize("case", list(MANIFESTS))
@pytest.mark.parametrize("command", ["publish", "plan"])
def test_a_manifest_of_the_wrong_shape_is_named(project, case, command):
    data = project.manifest()
    MANIFESTS[case][0](data)
    project.manifest_path.write_text(json.dumps(data))
    refused_and_unchanged(project, (command,), f"the dbt manifest {project.manifest_path} is malformed",
                          MANIFESTS[case][1], "re-run `dbt build`")


# -- the registry's lock ---------------------------------------------------------------------
@pytest.mark.parametrize("command", ["publish", "materialize"])
def test_a_lock_path_that_is_a_directory_is_named(project, command):
    settle(project)
    lock = project.lake / "registry.json.lock"
    lock.unlink(missing_ok=True)
    lock.mkdir()
    refused_and_unchanged(project, (command,), f"cannot lock {lock}: it is a directory",
                          "fix: remove that directory")


# -- a full disk -------------------------------------------------------------------------------
def test_a_full_disk_names_the_file_being_written(project, tmp_path):
    settle(project)
    before = snapshot(project.lake)  # the online store (SQLite in the lake) is read off the full disk
    with full_tmpfs(project.lake, tmp_path, size="64m"):
        assert_refused(project.sync("publish"), f"cannot write {project.registry_path}: no space left on the device",
                       "fix: free space (or raise the quota) on the filesystem that holds it")
    assert_unchanged(before, snapshot(project.lake))


# -- feature names ------------------------------------------------------------------------------
def test_a_feature_name_with_a_colon_is_refused_at_validation(project):
    """`view:feature` could never name it: refused before anything is published (real dbt build)."""
    project.edit("features/merchant_risk.sql", "fraud_reports as fraud_reports_7d", 'fraud_reports as "fraud:reports_7d"')
    project.edit("features/schema.yml", "- name: fraud_reports_7d", '- name: "fraud:reports_7d"')
    project.dbt("build", "-s", "merchant_risk")
    for command in ("plan", "publish"):
        refused_and_unchanged(project, (command,),
                              "merchant_risk: columns.fraud:reports_7d: feature name 'fraud:reports_7d' contains ':', "
                              "so it cannot be referenced as view:feature", "rename the column, e.g. `as fraud_reports_7d`")


# -- join key values outside the entity's type ---------------------------------------------------
def _rewrite(path: Path, change: Callable[[pa.Table], pa.Table]) -> None:
    """Rewrite a Parquet file of the lake in place, keeping its footer metadata."""
    table = pq.read_table(path)
    pq.write_table(change(table).replace_schema_metadata(table.schema.metadata), path)


def _with_key(table: pa.Table, key: str, first: int, type_: pa.DataType) -> pa.Table:
    values = table.column(key).to_pylist()
    i = table.schema.get_field_index(key)
    return table.set_column(i, pa.field(key, type_), pa.array([first, *values[1:]], type_))


@pytest.mark.parametrize("command", ["publish", "materialize"])
def test_uint64_keys_beyond_int64_are_refused_naming_a_sample_key(project, command):
    _rewrite(project.published_path("merchant_risk"), lambda t: _with_key(t, "merchant_id", 2**63 + 5, pa.uint64()))
    refused_and_unchanged(project, (command,),
                          "merchant_risk: columns.merchant_id: join key value 9223372036854775813",
                          "stored as uint64", "outside the value_type int64 of entity 'merchant'",
                          "or declare the entity's value_type as string")


def test_int64_keys_beyond_an_int32_entity_are_refused_naming_a_sample_key(project):
    project.edit("dbt_project.yml", "join_keys: [merchant_id]\n            value_type: int64",
                 "join_keys: [merchant_id]\n            value_type: int32")
    project.dbt("build", "-s", "merchant_risk")
    _rewrite(_newest_build(project, "merchant_risk"), lambda t: _with_key(t, "merchant_id", 3_000_000_000, pa.int64()))
    refused_and_unchanged(project, ("publish",),
                          "merchant_risk: columns.merchant_id: join key value 3000000000",
                          "stored as int64", "outside the value_type int32 of entity 'merchant'")


def _newest_build(project, view: str) -> Path:
    """The build dbt just wrote (build ids sort by time)."""
    return max(project.lake.glob(f"features/{view}@*.parquet"))


# -- partitioned views whose files disagree -------------------------------------------------------
def _partition_files(project, view: str) -> list[Path]:
    return sorted(project.published_path(view).glob("*/*.parquet"))


def test_files_that_disagree_on_the_partition_column_type_are_named(project):
    first, second = _partition_files(project, "customer_spend")[:2]
    _rewrite(first, lambda t: t.append_column("event_month", pa.array([20260501] * t.num_rows, pa.int32())))
    _rewrite(second, lambda t: t.append_column("event_month", pa.array(["2026-06-01"] * t.num_rows)))
    base = project.published_path("customer_spend")
    for command in ("publish", "materialize"):
        refused_and_unchanged(project, (command,),
                              "customer_spend: columns.event_month: the files under",
                              "disagree on the type of partition column 'event_month'",
                              f"int32 in {first.relative_to(base)}", f"string in {second.relative_to(base)}",
                              "dbt build -s customer_spend")


def test_files_that_disagree_on_a_feature_type_are_named(project):
    second = _partition_files(project, "customer_spend")[1]
    _rewrite(second, lambda t: t.set_column(t.schema.get_field_index("amount_sum_7d"), "amount_sum_7d",
                                            t.column("amount_sum_7d").cast(pa.string())))
    base = project.published_path("customer_spend")
    for command in ("publish", "materialize"):
        refused_and_unchanged(project, (command,),
                              "customer_spend: columns.amount_sum_7d: the files under",
                              "disagree on the type of column 'amount_sum_7d'", "double in",
                              f"string in {second.relative_to(base)}")

