"""The analysts' report: one self-contained HTML page (inline CSS/JS, images as data URIs).

Nothing here touches files or the network: :func:`render` turns a :class:`ReportData` into a
string. The page has a summary of flags, a flags table, one card per farm target (pictures,
numbers, verdict), the sanity-check and faithfulness tables, and plots.

The columns each table shows are chosen here, in page order, from the columns the module that
writes the table declares (:func:`shown` checks each name against them).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.audit.faithfulness import FAITHFULNESS_COLUMNS
from pipeline.audit.flags import FLAG_COLUMNS, SEVERITY, SUMMARY_COLUMNS
from pipeline.audit.patches import CUE_COLUMNS
from pipeline.audit.reliance import POOLED_COLUMNS


def shown(owner: Sequence[str], *names: str) -> tuple[str, ...]:
    """The columns a table shows, in order, each checked to be one its writer declares.

    Args:
        owner: The table's columns as its writer declares them (e.g. ``FLAG_COLUMNS``).
        names: The columns to show.

    Raises:
        ValueError: a name is not a column of the table.
    """
    unknown = [n for n in names if n not in owner]
    if unknown:
        raise ValueError(f"columns {unknown} are not in the table (it has {list(owner)})")
    return names


#: Flag-table columns shown for each cue, before and after the counterfactual's probabilities.
_CUE_SHOWN = ("cue", "method", "verdict", "enrichment", "ci_low", "ci_high", "effect", "swir_share")
_CHANGE_SHOWN = ("prob_change", "logit_change", "placebo_logit_change", "score_change", "mask_iou")

#: Columns of the flag table (``audit/flags.csv``) on the page.
FLAG_TABLE = shown(FLAG_COLUMNS, "target", "target_id", *_CUE_SHOWN, *_CHANGE_SHOWN)

#: Columns of a farm card's table (its rows of ``audit/flags.csv``).
CARD_TABLE = shown(FLAG_COLUMNS, *_CUE_SHOWN, "prob", "prob_cf", *_CHANGE_SHOWN)

#: Columns of the per-run table (``audit/run_flags.csv``).
RUN_FLAG_TABLE = shown(
    POOLED_COLUMNS,
    "target",
    "method",
    "cue",
    "n_patches",
    "enrichment",
    "ci_low",
    "ci_high",
    "effect",
    "flagged",
)

#: Columns of the faithfulness table (``audit/faithfulness.csv``).
FAITHFULNESS_TABLE = shown(
    FAITHFULNESS_COLUMNS,
    "patch_id",
    "method",
    "status",
    "deletion_auc",
    "insertion_auc",
    "infidelity",
    "sensitivity_max",
    "reason",
)

#: Columns of the cue table (``audit/cues.csv``).
CUE_TABLE = shown(CUE_COLUMNS, "patch_id", "cue", "status", "source", "pixel_share", "reason")

#: Columns of the per-cue summary (``flags.run_summary``): the cue, then all of its numbers.
PER_CUE_TABLE = ("cue", *SUMMARY_COLUMNS)

#: Verdict -> badge colour.
BADGE: dict[str, str] = {
    "confirmed": "#c0392b",
    "unconfirmed": "#e67e22",
    "not_flagged": "#27ae60",
    "cue_absent": "#7f8c8d",
    "not_computable": "#555555",
}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;
background:#f6f7f9}
header{background:#1f3b57;color:#fff;padding:16px 24px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.85;font-size:13px}
main{padding:16px 24px;max-width:1400px}section{margin-bottom:28px}
h2{font-size:18px;border-bottom:2px solid #1f3b57;padding-bottom:4px}
table{border-collapse:collapse;font-size:12px;background:#fff}
th,td{border:1px solid #d0d4da;padding:3px 6px;text-align:right}
th{background:#e9edf2}td.l,th.l{text-align:left}
.badge{display:inline-block;color:#fff;border-radius:3px;padding:1px 6px;font-size:11px}
.tiles{display:flex;gap:12px;flex-wrap:wrap}.tile{background:#fff;border:1px solid #d0d4da;
border-radius:4px;padding:8px 12px;min-width:120px}.tile b{font-size:20px;display:block}
.cards{display:flex;flex-wrap:wrap;gap:14px}.card{background:#fff;border:1px solid #ccd;
border-radius:6px;padding:10px;width:720px;max-width:100%;overflow-x:auto}
.card h3{margin:0 0 6px;font-size:15px}
.imgs{display:flex;flex-wrap:wrap;gap:6px}.imgs figure{margin:0;text-align:center;font-size:11px}
.imgs img{width:120px;height:120px;image-rendering:pixelated;border:1px solid #999}
.pass{color:#1e8449;font-weight:600}.fail{color:#c0392b;font-weight:600}
.controls button{margin-right:6px}.note{font-size:12px;color:#555}
.plots img{max-width:640px;margin:4px 8px 4px 0;border:1px solid #ddd;background:#fff}
"""

JS = """
(function () {
  function show(kind) {
    var cards = document.querySelectorAll('.card');
    for (var i = 0; i < cards.length; i++) {
      var v = cards[i].getAttribute('data-verdict');
      var on = kind === 'all' || (kind === 'flagged' && (v === 'confirmed' || v === 'unconfirmed'))
        || v === kind;
      cards[i].style.display = on ? '' : 'none';
    }
    var count = document.getElementById('shown-count');
    if (count) {
      var n = 0;
      for (var j = 0; j < cards.length; j++) { if (cards[j].style.display === '') { n++; } }
      count.textContent = n + ' shown';
    }
  }
  var buttons = document.querySelectorAll('[data-show]');
  for (var k = 0; k < buttons.length; k++) {
    buttons[k].addEventListener('click', function (ev) {
      show(ev.target.getAttribute('data-show'));
    });
  }
  show('all');
})();
"""


@dataclass(frozen=True)
class Figure:
    """An image of a card: caption and ``data:`` URI."""

    caption: str
    uri: str


@dataclass(frozen=True)
class Card:
    """One farm target.

    Attributes:
        title: e.g. ``label_farms w123``.
        verdict: Overall verdict (worst over cues: confirmed > unconfirmed > not_flagged ...).
        subtitle: Patch and notes.
        figures: RGB, label, prediction, cue masks and each method's map.
        rows: One dict per cue for the numbers table.
    """

    title: str
    verdict: str
    subtitle: str
    figures: list[Figure]
    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows (already computed)."""

    title: str
    run: str
    generated: str
    summary: dict[str, Any]
    flags: list[dict[str, Any]]
    run_flags: list[dict[str, Any]]
    cards: list[Card]
    sanity: dict[str, Any]
    faithfulness: list[dict[str, Any]]
    cues: list[dict[str, Any]]
    plots: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def fmt(value: Any, digits: int = 3) -> str:
    """Human-readable cell: floats rounded, NaN/None as an en dash, bools as yes/no."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return html.escape(str(value))


def badge(verdict: str) -> str:
    colour = BADGE.get(verdict, "#555")
    return f'<span class="badge" style="background:{colour}">{html.escape(verdict)}</span>'


def table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    table_id: str = "",
    left: Sequence[str] = (),
) -> str:
    """An HTML table of ``rows`` restricted to ``columns`` (verdict cells become badges)."""
    if not rows:
        return '<p class="note">(none)</p>'
    ident = f' id="{table_id}"' if table_id else ""
    head = "".join(f'<th class="{"l" if c in left else ""}">{html.escape(c)}</th>' for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c)
            text = badge(str(v)) if c == "verdict" else fmt(v)
            cells.append(f'<td class="{"l" if c in left else ""}">{text}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _summary(data: ReportData) -> str:
    s = data.summary
    tiles = [
        ("farm targets", s.get("targets", 0)),
        ("flagged", s.get("flagged", 0)),
        ("confirmed", s.get("confirmed", 0)),
        ("cue not computable", s.get("not_computable", 0)),
        ("patches", s.get("patches", 0)),
    ]
    html_tiles = "".join(
        f'<div class="tile"><b>{fmt(v)}</b>{html.escape(k)}</div>' for k, v in tiles
    )
    per_cue = table(
        [{"cue": c, **v} for c, v in s.get("per_cue", {}).items()], PER_CUE_TABLE, left=["cue"]
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in data.notes)
    return (
        f'<section id="summary"><h2>Summary of flags</h2><div class="tiles">{html_tiles}'
        f"</div><h3>Per cue</h3>{per_cue}"
        + (f'<ul class="note">{notes}</ul>' if notes else "")
        + "</section>"
    )


def by_severity(flags: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flag rows, confirmed first, then by enrichment (highest first) within a verdict."""

    def key(row: dict[str, Any]) -> tuple[int, float]:
        verdict = str(row.get("verdict"))
        rank = SEVERITY.index(verdict) if verdict in SEVERITY else len(SEVERITY)
        try:
            enrichment = float(row.get("enrichment") or 0.0)
        except (TypeError, ValueError):
            enrichment = 0.0
        return rank, -(enrichment if math.isfinite(enrichment) else 0.0)

    return sorted(flags, key=key)


def _flags(data: ReportData) -> str:
    return (
        '<section id="flags"><h2>Flags per farm</h2>'
        '<p class="note">Enrichment: the cue\'s share of positive attribution outside the '
        "farms and their buffer divided by its share of that area (1 = no preference). "
        "Verdicts: <i>confirmed</i> means removing the cue moved the prediction, at least "
        "audit.placebo_ratio times as much (2 by default, in log-odds) as removing the same "
        "blobs turned onto plain background at the same distance (the placebo). Most alarming "
        "first.</p>"
        + table(
            by_severity(data.flags),
            FLAG_TABLE,
            table_id="flags-table",
            left=["target", "target_id", "cue", "method"],
        )
        + "<h3>Per run (pooled over patches, bootstrap CI across patches)</h3>"
        + table(
            data.run_flags,
            RUN_FLAG_TABLE,
            table_id="run-flags-table",
            left=["target", "method", "cue"],
        )
        + "</section>"
    )


def _card(card: Card) -> str:
    figs = "".join(
        f'<figure><img alt="{html.escape(f.caption)}" src="{f.uri}">'
        f"<figcaption>{html.escape(f.caption)}</figcaption></figure>"
        for f in card.figures
    )
    return (
        f'<div class="card" data-verdict="{html.escape(card.verdict)}">'
        f"<h3>{html.escape(card.title)} {badge(card.verdict)}</h3>"
        f'<p class="note">{html.escape(card.subtitle)}</p><div class="imgs">{figs}</div>'
        + table(card.rows, CARD_TABLE, left=["cue", "method"])
        + "</div>"
    )


def _cards(data: ReportData) -> str:
    buttons = "".join(
        f'<button type="button" data-show="{k}">{k}</button>'
        for k in ("all", "flagged", "confirmed", "not_flagged")
    )
    cards = "".join(_card(c) for c in data.cards) or '<p class="note">(no farm targets)</p>'
    return (
        f'<section id="cards"><h2>Farm cards</h2><div class="controls">{buttons}'
        f'<span id="shown-count" class="note"></span></div><div class="cards">{cards}</div>'
        "</section>"
    )


def _pf(value: Any) -> str:
    if value is None:
        return "–"
    return '<span class="pass">pass</span>' if value else '<span class="fail">FAIL</span>'


def _sanity(data: ReportData) -> str:
    s = data.sanity
    if "model_randomization" not in s:
        reason = s.get("skipped", "not run")
        return (
            f'<section id="sanity"><h2>Sanity checks of the explanations</h2>'
            f'<p class="note">Not run: {html.escape(str(reason))}</p></section>'
        )
    mr = s["model_randomization"]
    steps = mr.get("steps", [])
    head = "".join(f"<th>{html.escape(str(st)[-28:])}</th>" for st in steps)
    rows = []
    dr = s.get("data_randomization", {}).get("methods", {})
    for method, v in mr.get("methods", {}).items():
        cells = "".join(
            f"<td>{fmt(r)} / {fmt(q)}</td>"
            for r, q in zip(v.get("spearman", []), v.get("ssim", []), strict=False)
        )
        d = dr.get(method, {})
        expected = " (expected to fail)" if method in s.get("expected_failures", []) else ""
        rows.append(
            f'<tr><td class="l">{html.escape(method)}{expected}</td>{cells}'
            f"<td>{_pf(v.get('pass'))}</td><td>{fmt(d.get('spearman'))} / "
            f"{fmt(d.get('ssim'))}</td><td>{_pf(d.get('pass'))}</td></tr>"
        )
    dskip = s.get("data_randomization", {}).get("skipped")
    note = (
        f'<p class="note">Cells: Spearman rank correlation of |maps| / SSIM against the '
        f"trained model's maps, per cascade step (layers re-initialized from the head "
        f"down). {html.escape(str(s.get('criterion', '')))}. Patches: "
        f"{html.escape(', '.join(s.get('patches', [])))}."
        + (f" Data randomization not run: {html.escape(str(dskip))}." if dskip else "")
        + "</p>"
    )
    return (
        f'<section id="sanity"><h2>Sanity checks of the explanations</h2>{note}'
        f'<table id="sanity-table"><thead><tr><th class="l">method</th>{head}'
        f"<th>model rand.</th><th>shuffled labels</th><th>data rand.</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _faithfulness(data: ReportData) -> str:
    return (
        '<section id="faithfulness"><h2>Faithfulness</h2><p class="note">Deletion AUC: '
        "lower is better (removing the top superpixels kills the prediction fast); "
        "insertion AUC: higher is better; infidelity and max-sensitivity (captum): lower "
        "is better.</p>"
        + table(
            data.faithfulness,
            FAITHFULNESS_TABLE,
            table_id="faithfulness-table",
            left=["patch_id", "method", "status", "reason"],
        )
        + "</section>"
    )


def _cues(data: ReportData) -> str:
    return (
        '<section id="cues"><h2>Cue masks per patch</h2>'
        + table(
            data.cues,
            CUE_TABLE,
            table_id="cues-table",
            left=["patch_id", "cue", "status", "source", "reason"],
        )
        + "</section>"
    )


def _plots(data: ReportData) -> str:
    imgs = "".join(
        f'<img alt="{html.escape(f.caption)}" title="{html.escape(f.caption)}" src="{f.uri}">'
        for f in data.plots
    )
    return f'<section id="plots"><h2>Plots</h2><div class="plots">{imgs}</div></section>'


def render(data: ReportData) -> str:
    """The whole page as one string (UTF-8, no external resources)."""
    title = html.escape(data.title)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f'<title>{title}</title><link rel="icon" href="data:,"><style>{CSS}</style></head>'
        f"<body><header><h1>{title}</h1><p>run <b>{html.escape(data.run)}</b> · generated "
        f"{html.escape(data.generated)}</p></header><main>"
        + _summary(data)
        + _flags(data)
        + _cards(data)
        + _sanity(data)
        + _faithfulness(data)
        + _plots(data)
        + _cues(data)
        + f"</main><script>{JS}</script></body></html>\n"
    )
