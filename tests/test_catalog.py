"""The catalog page (issue #14): written by ``python -m sync catalog --out DIR`` and opened in a
real headless browser (Debian's chromium + chromium-driver, driven by selenium); served at
``GET /catalog`` behind the bearer token."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sync.serving.http import ServerSettings, create_app

from .conftest import Project
from .registry_docs import registry_doc

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "catalog-token-7Yk"

# Until sync/cli.py registers catalog_cmd, run the same click group with it added.
SHIM = ("import sys; from sync.cli import cli, main; from sync.operate.catalog import catalog_cmd; "
        "cli.add_command(catalog_cmd); sys.exit(main())")


def run_catalog(project: Project, out: Path) -> subprocess.CompletedProcess:
    from sync.cli import cli

    if "catalog" in cli.commands:
        return project.sync("catalog", "--out", str(out))
    return subprocess.run([sys.executable, "-c", SHIM, "catalog", "--out", str(out)], check=False, cwd=project.dir,
                          env=project.env(), capture_output=True, text=True)


def registry_edges(doc: dict) -> set[tuple[str, str]]:
    edges = set()
    for name, view in doc["feature_views"].items():
        vid = view.get("unique_id") or name
        for parent in view["lineage"]["parents"]:
            edges.add((parent, vid))
        for child in view["lineage"]["downstream"]:
            edges.add((vid, child))
    return edges


def browser():
    if not (shutil.which("chromium") and Path(CHROMEDRIVER).exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))


@pytest.mark.slow
def test_catalog_page_in_a_headless_browser(project: Project, tmp_path: Path):
    from selenium.webdriver.common.by import By

    out = tmp_path / "catalog"
    result = run_catalog(project, out)
    assert result.returncode == 0, result.stdout + result.stderr
    index = out / "index.html"
    assert index.exists()
    doc = json.loads(project.registry_path.read_text())
    driver = browser()
    try:
        driver.get(index.as_uri())
        assert "Feature catalog" in driver.title
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert errors == []
        listed = {row.get_attribute("data-view") for row in driver.find_elements(By.CSS_SELECTOR, "#views tr.view-row")}
        assert listed == set(doc["feature_views"])
        sections = {s.get_attribute("data-view") for s in driver.find_elements(By.CSS_SELECTOR, "section.view")}
        assert sections == set(doc["feature_views"])
        for name, view in doc["feature_views"].items():
            text = driver.find_element(By.ID, f"view-{name}").text
            for feature in view["features"]:
                assert feature["name"] in text
            assert view["owner"] in text
        drawn = driver.find_elements(By.CSS_SELECTOR, "svg#lineage path.edge")
        edges = {(e.get_attribute("data-from"), e.get_attribute("data-to")) for e in drawn
                 if e.get_attribute("data-kind") == "registry"}
        assert edges == registry_edges(doc)
        # raw sources feed the views' staging models (from the manifest's parent_map)
        sources = {(e.get_attribute("data-from"), e.get_attribute("data-to")) for e in drawn
                   if e.get_attribute("data-kind") == "source"}
        expected_sources = {("source:" + s, p) for v in doc["feature_views"].values()
                            for s in v["lineage"]["sources"] for p in v["lineage"]["parents"]}
        assert sources == expected_sources
        # every feature view box is in the graph, and histograms were drawn from the stored statistics
        nodes = {g.get_attribute("data-id") for g in driver.find_elements(By.CSS_SELECTOR, "svg#lineage g.node.view")}
        assert nodes == {v["unique_id"] for v in doc["feature_views"].values()}
        assert driver.find_elements(By.CSS_SELECTOR, "svg.hist rect")
        ARTIFACTS.mkdir(exist_ok=True)
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1400, min(int(height) + 100, 6000))
        assert driver.save_screenshot(str(ARTIFACTS / "catalog.png"))
    finally:
        driver.quit()


def test_catalog_endpoint_needs_the_token(tmp_path: Path):
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "registry.json").write_text(json.dumps(registry_doc(3, project="<script>alert(1)</script>")))
    app = create_app(ServerSettings(registry=str(lake), token=TOKEN))
    client = TestClient(app)
    assert client.get("/catalog").status_code == 401
    assert client.get("/catalog", headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = client.get("/catalog", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "Feature catalog" in r.text and "registry serial 3" in r.text
    assert "<script>" not in r.text and "&lt;script&gt;" in r.text  # escaped
    assert "/catalog" not in client.get("/openapi.json").json()["paths"]
