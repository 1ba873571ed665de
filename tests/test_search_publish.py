"""The vector index through real dbt and `python -m sync`: built at publish from the build it is
published with, recorded with the version, never served for another version, removed with its build."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sync import FeatureStore
from sync.search import SearchError

pytestmark = pytest.mark.slow

INDEX_META = """          tags: [embeddings]
          vector_index: {metric: cosine, kind: hnsw, min_rows: 0}"""


def _store(project) -> FeatureStore:
    return FeatureStore(project.dir, lake=str(project.lake))


def _publish_with_index(project) -> dict:
    project.edit("features/schema.yml", "          tags: [embeddings]", INDEX_META)
    project.dbt("build", "-s", "merchant_embedding")
    done = project.sync("publish")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Vector index of merchant_embedding: hnsw, cosine" in done.stdout
    return json.loads(project.registry_path.read_text())


def test_publish_builds_an_index_bound_to_the_build(project):
    doc = _publish_with_index(project)
    entry = doc["feature_views"]["merchant_embedding"]
    state = entry["offline_state"]["vector_index"]
    merchants = len(_store(project).search("merchant_embedding:embedding", np.ones(64), k=1000, mode="exact"))
    assert state["rows"] == merchants > 0
    assert state["recall_at_10"] >= 0.95 and state["build"] == entry["offline"]["path"]
    for suffix in (".faiss", ".rows.parquet", ".json"):
        assert (project.lake / (state["path"] + suffix)).is_file()

    store = _store(project)
    ids = [{"merchant_id": m} for m in range(1, 51)]
    exact = store.search("merchant_embedding:embedding", ids, k=10, mode="exact")
    approx = store.search("merchant_embedding:embedding", ids, k=10, mode="approximate")
    assert json.loads(approx.schema.metadata[b"feature_store:search"])["mode"] == "approximate"
    def per_query(table) -> dict[int, set]:
        out: dict[int, set] = {}
        for row in table.to_pylist():
            out.setdefault(row["query"], set()).add(row["merchant_id"])
        return out

    truth, found = per_query(exact), per_query(approx)
    hits = sum(len(truth[q] & found.get(q, set())) for q in range(50))
    assert hits / (50 * 10) >= 0.95

    again = project.sync("publish")  # same build: the index is reused, not rebuilt
    assert again.returncode == 0
    assert json.loads(project.registry_path.read_text())["feature_views"]["merchant_embedding"][
        "offline_state"]["vector_index"] == state


def test_a_new_version_never_serves_the_old_index(project):
    first = _publish_with_index(project)["feature_views"]["merchant_embedding"]
    project.edit("features/merchant_embedding.sql", "from {{ ref('stg_merchant_embeddings') }}",
                 "from {{ ref('stg_merchant_embeddings') }}\nwhere merchant_id <> 7")
    project.dbt("build", "-s", "merchant_embedding")
    done = project.sync("publish")
    assert done.returncode == 0, done.stdout + done.stderr
    second = json.loads(project.registry_path.read_text())["feature_views"]["merchant_embedding"]
    assert second["version"] == first["version"] + 1
    old, new = first["offline_state"]["vector_index"], second["offline_state"]["vector_index"]
    assert new["path"] != old["path"] and new["source"] != old["source"] and new["rows"] == old["rows"] - 1
    found = _store(project).search("merchant_embedding:embedding", np.ones(64), k=1000, mode="approximate")
    assert 7 not in found["merchant_id"].to_pylist()
    # the old version, read from the archive, still gets its own index while its build is kept
    past = FeatureStore(project.dir, lake=str(project.lake), serial=json.loads(
        project.registry_path.read_text())["serial"] - 1)
    assert 7 in past.search("merchant_embedding:embedding", np.ones(64), k=1000, mode="approximate")[
        "merchant_id"].to_pylist()


def test_an_index_of_other_data_is_refused(project):
    state = _publish_with_index(project)["feature_views"]["merchant_embedding"]["offline_state"]["vector_index"]
    # someone rewrites the published build in place: the index no longer describes it
    build = project.lake / state["build"]
    target = next(build.rglob("*.parquet")) if build.is_dir() else build
    target.write_bytes(target.read_bytes())  # same bytes, a new mtime: a different version of the file
    with pytest.raises(SearchError, match="built from other data"):
        _store(project).search("merchant_embedding:embedding", np.ones(64), k=5, mode="approximate")


def test_bad_index_settings_name_the_view_and_publish_nothing(project):
    before = project.registry_path.read_bytes()
    project.edit("features/schema.yml", "          tags: [embeddings]",
                 "          tags: [embeddings]\n          vector_index: {metric: manhattan, knd: hnsw}")
    project.dbt("parse")
    done = project.sync("publish")
    assert done.returncode == 1
    assert "merchant_embedding: feature_view.vector_index.metric: 'manhattan' is not a metric" in done.stderr
    assert "feature_view.vector_index.knd" in done.stderr and "did you mean 'kind'" in done.stderr
    assert "Traceback" not in done.stderr
    assert project.registry_path.read_bytes() == before
