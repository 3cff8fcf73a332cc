"""``attribkit evaluate``'s pictures and its self-contained ``report.html``.

The report is assembled from pieces: the model's own figures (t-SNE of its
features, the perturbations it attributes, its training curves) and one
section per head, from each head's ``report_figures`` — so a head shipped by
a plugin adds its own section without a change here.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import torch

from . import figures, storage
from .figures import Figure
from .training.data import AttributionData
from .training.metrics import signature_metrics
from .training.models import Member, predict_with_features


def features_of(members: dict[str, Member], images: torch.Tensor) -> torch.Tensor:
    """Every member's attack and victim features side by side (a shared branch once)."""
    return predict_with_features(members, images, features=True)[1]


def model_figures(members: dict[str, Member], data: AttributionData, images: torch.Tensor,
                  history: list[dict], tsne: bool = True, features: torch.Tensor | None = None) -> list[Figure]:
    """``features``: the members' features on ``images`` if already computed (the t-SNE's input)."""
    ls = data.label_spaces
    found = []
    if tsne:
        groups = [f"{ls.attacks[a]} · {ls.victims[v]}"
                  for a, v in zip(data.labels.attack.tolist(), data.labels.victim.tolist())]
        png = figures.tsne(features_of(members, images) if features is None else features, groups,
                           "t-SNE of the attribution features")
        if png:
            found.append(Figure("tsne_features", "Features by attack × victim (paper Fig. 2)",
                                f"t-SNE of the features the heads read, up to {figures.TSNE_POINTS} examples of the "
                                f"evaluated split, coloured by true attack and victim", png))
    grid = perturbation_grid(data)
    if grid:
        clean, cells = grid
        found.append(Figure("perturbations", "Perturbations per attack and victim (paper Figs. 3–4)",
                            "adversarial minus clean for one clean image; the value under each is its hyperparameter",
                            figures.perturbations(cells, ls.attacks, ls.victims, clean,
                                                  "one clean image, every attack × victim")))
    png = figures.training_curves(history, "training curves")
    if png:
        found.append(Figure("training_curves", "Training curves (paper Fig. 7)",
                            "each signature's metric after each epoch, per member", png))
    return found


def perturbation_grid(data: AttributionData) -> tuple[torch.Tensor, dict] | None:
    """The clean image attacked in the most attack × victim cells, and in each such
    cell the example at its middle hyperparameter value."""
    if len(data) == 0:
        return None
    cells_of: dict[int, set] = {}
    for c, a, v in zip(data.clean_index.tolist(), data.labels.attack.tolist(), data.labels.victim.tolist()):
        cells_of.setdefault(c, set()).add((a, v))
    best = max(sorted(cells_of), key=lambda c: len(cells_of[c]))
    ls = data.label_spaces
    hp = torch.nan_to_num(data.labels.hp, nan=0.0).sum(1)
    grid = {}
    for a, v in sorted(cells_of[best]):
        rows = torch.nonzero((data.clean_index == best) & (data.labels.attack == a)
                             & (data.labels.victim == v)).flatten()
        rows = rows[hp[rows].argsort()]
        i = int(rows[len(rows) // 2])
        grid[ls.attacks[a], ls.victims[v]] = (data.images[i] - data.clean[i], _value_label(data, i))
    first = int(torch.nonzero(data.clean_index == best)[0])
    return data.clean[first], grid


def _value_label(data: AttributionData, i: int) -> str:
    spaces = data.label_spaces
    values = data.labels.hp[i].tolist()
    return ", ".join(f"{spaces.hyperparameters[n].symbol} {v:g}"
                     for n, v in zip(spaces.hp_names, values) if v == v)


def write_figures(out: Path, sections: list[tuple[str, list[Figure]]]) -> list[str]:
    written = []
    for _, found in sections:
        for f in found:
            storage.write_bytes(out / f"{f.name}.png", f.png)
            written.append(str(out / f"{f.name}.png"))
    return written


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def num(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def metric_text(described: dict[str, dict], key: str, v) -> str:
    """A metric as the report shows it: accuracies in %, errors as they are."""
    return pct(v) if described[key]["kind"] == "accuracy" else num(v)


def signed(v) -> str:
    return "–" if v is None else f"{v:+.2f}"


def row_delta(report: dict, row: int) -> float | None:
    """Δ_MTL in the summary table's row ``row`` (0: the evaluated model, then its baselines): the
    model's against the first baseline, 0 for that baseline, none for the others (listed apart)."""
    if not report.get("baselines") or row > 1:
        return None
    return report.get("delta_mtl_percent") if row == 0 else 0.0


def _markdown_html(lines: list[str]) -> str:
    """The few markdown forms the trust section writes (headings, paragraphs, pipe tables) as HTML."""
    esc, out, table = html.escape, [], []
    for line in lines + [""]:
        if line.startswith("|"):
            if not set(line) <= set("|-"):  # the rule under a table's header
                table.append([esc(c.strip().strip("`")) for c in line.strip("|").split("|")])
            continue
        if table:
            head, *rows = table
            out.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows) + "</table>")
            table = []
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 4)
            out.append(f"<h{level}>{esc(line.lstrip('#').strip().replace('`', ''))}</h{level}>")
        elif line.strip():
            out.append(f"<p>{esc(line.replace('`', ''))}</p>")
    return "".join(out)


def html_report(report: dict, sections: list[tuple[str, list[Figure]]]) -> str:
    """One self-contained page: the summary table, then every section's figures inline."""
    esc = html.escape
    described = report["scores"]
    columns = signature_metrics(described)
    value = lambda key, v: metric_text(described, key, v)
    rows = [report] + report.get("baselines", [])
    table = "".join(
        f"<tr><td>{esc(r['model'])}</td><td>{esc(str(r.get('run', report['run'])))}</td>"
        f"<td>{r['parameters_m']:.2f}</td><td>{r['gflops']:.4f}</td>"
        + "".join(f"<td>{value(k, r.get(k))}</td>" for k, _ in columns)
        + f"<td>{signed(row_delta(report, i))}</td></tr>" for i, r in enumerate(rows))
    header = "".join(f"<th>{esc(described[k]['column'])}</th>" for k, _ in columns)
    body = [f"<h1>Evaluation of {esc(str(report['run']))} ({esc(report['model'])})</h1>",
            f"<p>Data: {esc(str(report['data']))}, {esc(report['split'])} split, {report['examples']} examples.</p>",
            "<table><tr><th>model</th><th>run</th><th>params (M)</th><th>GFLOPs</th>" + header
            + "<th>Δ_MTL (%)</th></tr>" + table + "</table>"]
    if report.get("baselines"):
        body.append("<p>Δ_MTL (eq. 15) of the evaluated model against the first baseline; against each: " + esc(
            ", ".join(f"{b['model']} ({b['run']}) {signed(b['delta_mtl_percent'])}" for b in report["baselines"])) + ".</p>")
    if "trust" in report:
        from .trust.report import trust_markdown

        body.append(_markdown_html(trust_markdown(report["trust"])))
    for title, found in sections:
        if not found:
            continue
        body.append(f"<h2>{esc(title)}</h2>")
        for f in found:
            data = base64.b64encode(f.png).decode()
            body.append(f"<figure><img alt=\"{esc(f.name)}\" src=\"data:image/png;base64,{data}\">"
                        f"<figcaption><b>{esc(f.title)}.</b> {esc(f.caption)}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}"
             "td:first-child,td:nth-child(2){text-align:left}img{max-width:100%}figure{margin:1.5em 0}")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>attribkit evaluation</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
