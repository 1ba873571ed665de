"""The catalog page: ``python -m sync catalog --out DIR`` and ``GET /catalog`` (docs/operations.md,
"Catalog").

One self-contained HTML page, rendered on the server from the registry: feature views and
their features (types, descriptions, owners, tags), versions and what changed in each, a
lineage graph (inline SVG: raw sources | dbt models | feature views | services, ML models
and downstream models), freshness (``sync.operate.status.view_status``) and each feature's
statistics with a small SVG histogram and, when cheap, drift over 7-day windows. No
JavaScript, no external URL: the page works offline and from a file.

Every lineage edge is an SVG ``<path class="edge" data-from=... data-to=...>``: ``parents ->
view`` and ``view -> downstream`` come from the registry's ``lineage``; ``source -> model``
edges (``data-kind="source"``) come from the manifest's ``parent_map`` when one is given,
else every source of a view is drawn to each of its non-view parents (``data-inferred``).
"""

from __future__ import annotations

import html
import time
from pathlib import Path

import click

from ..contract import format_ttl
from ..errors import FeatureStoreError

INDEX = "index.html"
DRIFT_WINDOW = "7d"

SOURCE, MODEL, VIEW, DOWNSTREAM = "source", "model", "view", "downstream"
COLUMNS = ((SOURCE, "raw sources"), (MODEL, "dbt models"), (VIEW, "feature views"),
           (DOWNSTREAM, "services, ML models, downstream"))

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1d2d44;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;font-size:13px;color:#c9d3e0}
main{padding:16px 24px;max-width:1400px}
section.card{background:#fff;border:1px solid #dde2ea;border-radius:6px;padding:12px 16px;margin:0 0 16px}
h2{font-size:17px;margin:4px 0 8px}h3{font-size:14px;margin:12px 0 6px}
table{border-collapse:collapse;font-size:13px;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceff3;vertical-align:top}
th{background:#f1f3f6;font-weight:600}
.tag{display:inline-block;background:#e6eefb;color:#23508e;border-radius:3px;padding:0 6px;margin:0 3px 2px 0;font-size:12px}
.fresh{color:#17803d;font-weight:600}.stale{color:#c0261b;font-weight:700}.no_sla,.unknown{color:#6b7280}
.flag{color:#c0261b;font-weight:700}.muted{color:#6b7280}code{font-size:12px}
nav a{margin-right:12px}
svg.lineage{width:100%;height:auto;background:#fbfcfd;border:1px solid #eceff3}
svg .node rect{stroke-width:1.2}svg .node text{font-size:12px;fill:#1d2430}
svg .source rect{fill:#fdf1dc;stroke:#c98a1b}svg .model rect{fill:#e9eef6;stroke:#61789c}
svg .view rect{fill:#dff3e6;stroke:#2f8a4d}svg .downstream rect{fill:#f3e6f7;stroke:#8a4aa0}
svg .edge{fill:none;stroke:#8a94a6;stroke-width:1.4}svg .col{font-size:12px;font-weight:600;fill:#4b5563}
svg.hist rect{fill:#5b7fb8}
"""


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _anchor(name: str) -> str:
    return "view-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


# -- lineage --------------------------------------------------------------------------

def _label(node: str) -> str:
    """A readable label for a lineage id: the last part of a dbt unique id."""
    for prefix in ("model.", "exposure.", "source.", "seed.", "snapshot."):
        if node.startswith(prefix):
            return node.split(".", 2)[-1] if node.count(".") >= 2 else node[len(prefix):]
    return node


def lineage_edges(doc: dict) -> set[tuple[str, str]]:
    """The registry's lineage edges: parent -> view and view -> downstream, by unique id."""
    edges: set[tuple[str, str]] = set()
    for name, view in (doc.get("feature_views") or {}).items():
        vid = view.get("unique_id") or name
        lineage = view.get("lineage") or {}
        for parent in lineage.get("parents") or []:
            edges.add((parent, vid))
        for child in lineage.get("downstream") or []:
            edges.add((vid, child))
    return edges


def _source_edges(doc: dict, manifest: dict | None) -> tuple[set[tuple[str, str]], bool]:
    """source -> model edges, and whether they were inferred (no manifest)."""
    views = doc.get("feature_views") or {}
    view_ids = {v.get("unique_id") or n for n, v in views.items()}
    edges: set[tuple[str, str]] = set()
    parent_map = (manifest or {}).get("parent_map") or {}
    sources = (manifest or {}).get("sources") or {}
    for view in views.values():
        lineage = view.get("lineage") or {}
        models = [p for p in lineage.get("parents") or [] if p not in view_ids]
        if parent_map:
            # each non-view parent gets an edge from every source upstream of it
            for model in models:
                seen: set[str] = set()
                todo = [model]
                while todo:
                    node = todo.pop()
                    if node in seen:
                        continue
                    seen.add(node)
                    for up in parent_map.get(node, []):
                        if up.startswith("source."):
                            src = sources.get(up) or {}
                            label = f"{src['source_name']}.{src['name']}" if "source_name" in src else _label(up)
                            edges.add(("source:" + label, model))
                        elif up not in view_ids:
                            todo.append(up)
        else:
            for src in lineage.get("sources") or []:
                for model in models:
                    edges.add(("source:" + src, model))
    return edges, not parent_map


def lineage_svg(doc: dict, manifest: dict | None = None) -> str:
    views = doc.get("feature_views") or {}
    services = doc.get("feature_services") or {}
    view_ids = {(v.get("unique_id") or n): n for n, v in views.items()}
    service_ids = {(s.get("unique_id") or f"service:{n}"): s for n, s in services.items()}
    registry_edges = lineage_edges(doc)
    source_edges, inferred = _source_edges(doc, manifest)
    kind: dict[str, str] = {}
    for a, b in source_edges:
        kind.setdefault(a, SOURCE)
        kind.setdefault(b, MODEL)
    for vid in view_ids:
        kind[vid] = VIEW
    for a, b in registry_edges:
        if a not in view_ids:
            kind.setdefault(a, MODEL)
        if b not in view_ids:
            kind[b] = DOWNSTREAM
    for sid in service_ids:
        kind.setdefault(sid, DOWNSTREAM)

    def label(node: str) -> str:
        if node in view_ids:
            return view_ids[node]
        if node in service_ids:
            s = service_ids[node]
            return s.get("label") or s.get("name") or _label(node)
        if node.startswith("source:"):
            return node[len("source:"):]
        return _label(node)

    box_w, box_h, gap_y, col_gap, top = 230, 30, 14, 90, 40
    pos: dict[str, tuple[float, float]] = {}
    tallest = 0
    for i, (k, _) in enumerate(COLUMNS):
        nodes = sorted((n for n, nk in kind.items() if nk == k), key=lambda n: label(n).lower())
        for j, node in enumerate(nodes):
            pos[node] = (20 + i * (box_w + col_gap), top + j * (box_h + gap_y))
        tallest = max(tallest, len(nodes))
    width = 40 + len(COLUMNS) * box_w + (len(COLUMNS) - 1) * col_gap
    height = top + max(tallest, 1) * (box_h + gap_y) + 10
    parts = [(f'<svg class="lineage" id="lineage" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
              f'width="{width}" height="{height}" role="img" aria-label="lineage graph">')]
    for i, (_, title) in enumerate(COLUMNS):
        parts.append(f'<text class="col" x="{20 + i * (box_w + col_gap)}" y="22">{esc(title)}</text>')
    edges = [(a, b, "source") for a, b in sorted(source_edges)] + [(a, b, "registry") for a, b in sorted(registry_edges)]
    for a, b, how in edges:
        if a not in pos or b not in pos:
            continue
        x1, y1 = pos[a][0] + box_w, pos[a][1] + box_h / 2
        x2, y2 = pos[b][0], pos[b][1] + box_h / 2
        if x2 <= x1:  # same column (a view fed by a view): a bend to the right
            x2 = pos[b][0] + box_w
            mid = max(x1, x2) + 40
            d = f"M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"
        else:
            mid = (x1 + x2) / 2
            d = f"M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"
        extra = ' data-inferred="true"' if how == "source" and inferred else ""
        parts.append(f'<path class="edge" data-kind="{how}" data-from="{esc(a)}" data-to="{esc(b)}"{extra} d="{d}">'
                     f'<title>{esc(label(a))} \u2192 {esc(label(b))}</title></path>')
    for node, (x, y) in sorted(pos.items()):
        text = label(node)
        shown = text if len(text) <= 32 else text[:31] + "\u2026"
        body = (f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="5"/>'
                f'<text x="{x + 8}" y="{y + 19}">{esc(shown)}</text><title>{esc(node)}</title>')
        if node in view_ids:
            body = f'<a href="#{_anchor(view_ids[node])}">{body}</a>'
        parts.append(f'<g class="node {kind[node]}" data-id="{esc(node)}">{body}</g>')
    parts.append("</svg>")
    return "".join(parts)


# -- statistics -------------------------------------------------------------------------

def histogram_svg(hist: dict | None, width: int = 160, height: int = 36) -> str:
    counts = (hist or {}).get("counts") or []
    if not counts or not any(counts):
        return '<span class="muted">-</span>'
    top = max(counts)
    bar = width / len(counts)
    edges = hist.get("edges") or []
    rects = []
    for i, n in enumerate(counts):
        h = 0 if not n else max(1.0, (height - 2) * n / top)
        lo = edges[i] if i < len(edges) else ""
        hi = edges[i + 1] if i + 1 < len(edges) else ""
        rects.append(f'<rect x="{i * bar + 0.5:.1f}" y="{height - h:.1f}" width="{max(bar - 1, 1):.1f}" '
                     f'height="{h:.1f}"><title>{esc(_fmt(lo))} to {esc(_fmt(hi))}: {n:,}</title></rect>')
    return (f'<svg class="hist" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">{"".join(rects)}</svg>')


def _fmt(x) -> str:
    if x is None or x == "":
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def _summary(f: dict) -> str:
    kind = f.get("kind")
    if kind in ("numeric", "vector"):
        num = f if kind == "numeric" else (f.get("norms") or {})
        q = num.get("quantiles") or {}
        text = (f"min {_fmt(num.get('min'))} · p50 {_fmt(q.get('0.5'))} · max {_fmt(num.get('max'))} · "
                f"mean {_fmt(num.get('mean'))} · sd {_fmt(num.get('stddev'))} · "
                f"≈{_fmt(num.get('approx_distinct'))} distinct")
        return ("L2 norms: " if kind == "vector" else "") + text
    if kind == "string":
        top = ", ".join(f"{t['value']} ({t['count']:,})" for t in (f.get("top_values") or [])[:5])
        return f"≈{_fmt(f.get('approx_distinct'))} distinct; top: {top or '-'}"
    if kind == "boolean":
        return f"true {_fmt(f.get('true_fraction'))}"
    return ""


# -- the page ---------------------------------------------------------------------------

def _freshness(doc: dict, fs) -> tuple[dict, str]:
    """view name -> ViewStatus (or None), and a note on the online store."""
    from .status import view_status

    views = doc.get("feature_views") or {}
    uid, counts, note = None, {}, ""
    try:
        store = fs.online_store()
        uid = store.instance_id()
        note = f"online store {store.display}"
        for name, view in views.items():
            if view.get("online", True):
                try:
                    counts[name] = store.count(f"{name}@{int(view['version'])}")
                except Exception:  # a count is a nicety
                    counts[name] = None
    except Exception as exc:  # the page still renders without the online store
        note = f"online store unavailable: {exc}"
    now_us = int(time.time() * 1_000_000)
    result = {}
    for name, view in views.items():
        try:
            result[name] = view_status(name, view, uid, counts.get(name), now_us)
        except Exception:
            result[name] = None
    return result, note


def _drift(fs, doc: dict, name: str) -> dict[str, dict]:
    from .drift import drift

    try:
        return {r["feature"]: r for r in drift(fs.lake, name, window=DRIFT_WINDOW, doc=doc)}
    except Exception:
        return {}


def _stats(fs, name: str, version: int) -> dict:
    from .statistics import load

    try:
        return (load(fs.lake, name, version) or {}).get("features") or {}
    except Exception:
        return {}


def _view_section(name: str, view: dict, st, stats: dict, drifts: dict) -> str:
    from .status import _duration, _when

    tags = "".join(f'<span class="tag">{esc(t)}</span>' for t in view.get("tags") or [])
    offline = view.get("offline") or {}
    rows = [f"<tr><th>version</th><td>{esc(view.get('version'))}</td></tr>",
            f"<tr><th>owner</th><td>{esc(view.get('owner') or '-')}</td></tr>",
            f"<tr><th>tags</th><td>{tags or '-'}</td></tr>",
            (f"<tr><th>entities</th><td>{esc(', '.join(view.get('entities') or []))} "
             f"(join keys {esc(', '.join(view.get('join_keys') or []))})</td></tr>"),
            f"<tr><th>event time</th><td>{esc(view.get('event_timestamp'))}</td></tr>",
            f"<tr><th>TTL</th><td>{esc(view.get('ttl') or '-')}</td></tr>",
            f"<tr><th>online</th><td>{'yes' if view.get('online', True) else 'no'}</td></tr>",
            (f"<tr><th>offline</th><td><code>{esc(offline.get('path') or offline.get('table'))}</code> "
             f"({esc(_fmt((view.get('offline_state') or {}).get('rows')))} rows)</td></tr>")]
    if st is not None:
        state = st.status
        mat = st.last_materialization or {}
        rows.append(
            f'<tr><th>freshness</th><td><span class="{esc(state)}">{esc({"no_sla": "no SLA"}.get(state, state))}</span>'
            f" · SLA {esc(format_ttl(view.get('freshness_seconds')) or '-')} · age {esc(_duration(st.age_seconds))} (on {esc(st.measured_on)})"
            f" · newest offline event {esc(_when(st.newest_offline_event))}"
            f" · newest online event {esc(_when(st.newest_online_event))}"
            f" · lag {esc(_duration(st.lag_seconds))}"
            f" · materialized {esc(_when(mat.get('materialized_at')))}"
            f" · online rows {esc(_fmt(st.online_rows))}"
            f"{' · ' + esc(st.reason) if st.reason else ''}</td></tr>")
    feats = []
    for f in view.get("features") or []:
        s = stats.get(f["name"]) or {}
        hist = (s.get("histogram") if s.get("kind") == "numeric" else (s.get("norms") or {}).get("histogram")) if s else None
        d = drifts.get(f["name"])
        if d is None or d.get("psi") is None:
            dtext = '<span class="muted">-</span>'
        else:
            dtext = (f'<span class="{"flag" if d.get("flag") else ""}">PSI {d["psi"]:.3f} '
                     f'({esc(d.get("level"))}{", drifted" if d.get("flag") else ""})</span>')
        nulls = _fmt(s.get("null_fraction")) if s else "-"
        feats.append(f"<tr><td><code>{esc(f['name'])}</code></td><td><code>{esc(f.get('data_type'))}</code></td>"
                     f"<td>{esc(f.get('description') or '')}</td><td>{esc(nulls)}</td>"
                     f"<td>{esc(_summary(s)) if s else '<span class=muted>no statistics</span>'}</td>"
                     f"<td>{histogram_svg(hist)}</td><td>{dtext}</td></tr>")
    versions = []
    for v in sorted(view.get("versions") or [], key=lambda v: -int(v.get("version") or 0)):
        changes = "".join(f"<li>{esc(c.get('kind'))}: {esc(c.get('detail'))}</li>" if isinstance(c, dict)
                          else f"<li>{esc(c)}</li>" for c in v.get("changes") or [])
        versions.append(f"<tr><td>{esc(v.get('version'))}</td><td>{esc(v.get('published_at'))}</td>"
                        f"<td><code>{esc(v.get('dbt_invocation_id'))}</code></td>"
                        f"<td><ul>{changes or '<li>-</li>'}</ul></td></tr>")
    lineage = view.get("lineage") or {}
    return (f'<section class="card view" id="{_anchor(name)}" data-view="{esc(name)}">'
            f"<h2>{esc(name)}</h2><p>{esc(view.get('description') or '')}</p>"
            f"<table class=\"meta\">{''.join(rows)}</table>"
            f"<h3>Features</h3><table class=\"features\"><tr><th>feature</th><th>type</th><th>description</th>"
            f"<th>null fraction</th><th>statistics</th><th>histogram</th><th>drift ({DRIFT_WINDOW} windows)</th></tr>"
            f"{''.join(feats)}</table>"
            f"<h3>Versions</h3><table class=\"versions\"><tr><th>version</th><th>published</th>"
            f"<th>dbt invocation</th><th>what changed</th></tr>{''.join(versions)}</table>"
            f"<h3>Lineage</h3><p>sources: {esc(', '.join(lineage.get('sources') or []) or '-')} · "
            f"models: {esc(', '.join(lineage.get('models') or []) or '-')} · "
            f"downstream: {esc(', '.join(_label(d) for d in lineage.get('downstream') or []) or '-')}</p>"
            "</section>")


def render(fs, manifest: dict | None = None, *, with_drift: bool = True) -> dict[str, str]:
    """The catalog's pages, name -> HTML: one self-contained ``index.html``."""
    doc = fs.registry
    views = doc.get("feature_views") or {}
    services = doc.get("feature_services") or {}
    fresh, store_note = _freshness(doc, fs)
    nav = "".join(f'<a href="#{_anchor(n)}">{esc(n)}</a>' for n in sorted(views))
    summary = []
    for name in sorted(views):
        v = views[name]
        st = fresh.get(name)
        state = st.status if st else "unknown"
        summary.append(f'<tr class="view-row" data-view="{esc(name)}"><td><a href="#{_anchor(name)}">{esc(name)}</a></td>'
                       f"<td>{esc(v.get('version'))}</td><td>{len(v.get('features') or [])}</td>"
                       f"<td>{esc(v.get('owner') or '-')}</td>"
                       f"<td>{''.join(f'<span class=tag>{esc(t)}</span>' for t in v.get('tags') or [])}</td>"
                       f'<td><span class="{esc(state)}">{esc({"no_sla": "no SLA"}.get(state, state))}</span></td>'
                       f"<td>{esc(v.get('description') or '')}</td></tr>")
    svc_rows = "".join(
        f"<tr><td>{esc(s.get('label') or n)} <span class=muted>({esc(n)})</span></td><td>{esc(s.get('owner') or '-')}</td>"
        f"<td>{esc(s.get('maturity') or '-')}</td><td>{esc(', '.join(s.get('features') or []))}</td>"
        f"<td>{esc(s.get('description') or '')}</td></tr>" for n, s in sorted(services.items()))
    sections = [_view_section(n, views[n], fresh.get(n), _stats(fs, n, int(views[n]["version"])),
                              _drift(fs, doc, n) if with_drift else {}) for n in sorted(views)]
    page = (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>Feature catalog · {esc(doc.get('project'))}</title><link rel=\"icon\" href=\"data:,\">"
        f"<style>{CSS}</style></head><body>"
        f"<header><h1>Feature catalog · {esc(doc.get('project'))}</h1>"
        f"<p>registry serial {esc(doc.get('serial'))}, published {esc(doc.get('published_at'))} · "
        f"{esc(store_note)} · rendered {esc(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()))}</p></header>"
        f"<main><nav>{nav}</nav>"
        f"<section class=\"card\"><h2>Feature views</h2><table id=\"views\"><tr><th>view</th><th>version</th>"
        f"<th>features</th><th>owner</th><th>tags</th><th>freshness</th><th>description</th></tr>{''.join(summary)}"
        "</table></section>"
        f"<section class=\"card\"><h2>Lineage</h2>{lineage_svg(doc, manifest)}</section>"
        f"<section class=\"card\"><h2>Feature services and ML models</h2><table><tr><th>service</th><th>owner</th>"
        f"<th>maturity</th><th>features</th><th>description</th></tr>{svc_rows}</table></section>"
        f"{''.join(sections)}</main></body></html>")
    return {INDEX: page}


def write(pages: dict[str, str], out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in pages.items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


@click.command("catalog")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Directory to write the catalog's HTML into (created if missing).")
@click.option("--project-dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="The dbt project directory.")
@click.option("--manifest", type=click.Path(dir_okay=False), default=None,
              help="dbt manifest to read for source edges [default: <project-dir>/target/manifest.json, if any].")
@click.option("--lake", default=None, help="Lake root URI [default: $FEATURE_STORE_LAKE or <project-dir>/lake].")
@click.option("--online", default=None, metavar="URL",
              help="Online store URL [default: $FEATURE_STORE_ONLINE, else SQLite at <lake>/online.db].")
@click.option("--no-drift", is_flag=True, default=False, help="Skip the 7-day window drift (reads the lake).")
def catalog_cmd(out_dir: str, project_dir: str = ".", manifest: str | None = None, lake: str | None = None,
                online: str | None = None, no_drift: bool = False) -> None:
    """Write the catalog (feature views, versions, lineage, freshness, statistics) as static HTML to --out."""
    import json

    from ..console import out
    from ..feature_store import FeatureStore

    fs = FeatureStore(project_dir, lake=lake, online=online)
    try:
        fs.refresh()  # no registry: a clear error, exit 1
        manifest_path = Path(manifest) if manifest else Path(project_dir) / "target" / "manifest.json"
        data = None
        if manifest_path.exists():
            try:
                data = json.loads(manifest_path.read_text())
            except (OSError, ValueError):
                data = None
        elif manifest:
            raise FeatureStoreError(f"no manifest at {manifest_path}")
        written = write(render(fs, data, with_drift=not no_drift), out_dir)
    finally:
        fs.close()
    for path in written:
        out.print(f"wrote {path}", markup=False, highlight=False)
