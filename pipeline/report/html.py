"""The analysts' report: one self-contained HTML page (inline CSS/JS, images as data URIs).

Nothing here touches files or the network: :func:`render` turns a :class:`ReportData` into a
string. The page opens with the answer, then model quality, the overview map and the farms
ranked by concern (a table linking to one card per farm); checks of the explanations follow;
the long tables come last, collapsed and sortable, each with the meaning of its columns.

The columns a table shows and what they mean come from the module that writes the table
(:class:`pipeline.tables.Columns`, picked with :meth:`~pipeline.tables.Columns.pick`).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.audit.faithfulness import FAITHFULNESS_COLUMNS
from pipeline.audit.flags import FLAG_COLUMNS, SUMMARY_COLUMNS
from pipeline.audit.patches import CUE_COLUMNS
from pipeline.audit.reliance import POOLED_COLUMNS
from pipeline.geo.styles import VERDICT_COLOURS
from pipeline.report.quality import QUALITY_COLUMNS
from pipeline.tables import Columns
from pipeline.timeline.tables import WINDOW_COLUMNS
from pipeline.triage.review import CANDIDATE_COLUMNS, SUSPECT_COLUMNS

#: Columns of the long flag table (``audit/flags.csv``: one row per farm and cue).
FLAG_TABLE = FLAG_COLUMNS.pick(
    [
        "target",
        "target_id",
        "cue",
        "verdict",
        "method",
        "enrichment",
        "ci_low",
        "ci_high",
        "effect",
        "swir_share",
        "prob",
        "prob_cf",
        "prob_change",
        "logit_change",
        "placebo_logit_change",
        "mask_iou",
        "cf_status",
    ]
)

#: Columns of a farm card's table (its rows of ``audit/flags.csv``).
CARD_TABLE = FLAG_COLUMNS.pick(
    [
        "cue",
        "verdict",
        "enrichment",
        "effect",
        "logit_change",
        "placebo_logit_change",
    ]
)

#: Columns of the per-run table (``audit/run_flags.csv``).
RUN_FLAG_TABLE = POOLED_COLUMNS.pick(
    ["target", "method", "cue", "n_patches", "enrichment", "ci_low", "ci_high", "effect", "flagged"]
)

#: Columns of the faithfulness table (``audit/faithfulness.csv``).
FAITHFULNESS_TABLE = FAITHFULNESS_COLUMNS.pick(
    [
        "patch_id",
        "method",
        "status",
        "deletion_auc",
        "insertion_auc",
        "infidelity",
        "sensitivity_max",
        "reason",
    ]
)

#: Columns of the cue table (``audit/cues.csv``).
CUE_TABLE = CUE_COLUMNS.pick(["patch_id", "cue", "status", "source", "pixel_share", "reason"])

#: Columns of the per-cue summary (``flags.run_summary``): the cue, then all of its numbers.
PER_CUE_TABLE = Columns(("cue", "the cue")) + SUMMARY_COLUMNS

#: Columns of the triage tables (``triage/review.gpkg``), as the report lists them.
CANDIDATE_TABLE = CANDIDATE_COLUMNS.pick(
    ["task_id", "object_id", "score", "mean_prob", "area_ha", "focus", "cue", "dates"]
)
SUSPECT_TABLE = SUSPECT_COLUMNS.pick(
    [
        "task_id",
        "farm_id",
        "osm_id",
        "osm_version",
        "osm_timestamp",
        "reason",
        "covered",
        "best_iou",
        "share_inside",
        "cue",
    ]
)

#: Columns of the ranking table, the report's own (one row per farm card).
RANK_TABLE = Columns(
    ("rank", "1 = most alarming: confirmed first, then unconfirmed flags, then the rest"),
    ("farm", "the farm (a link to its card)"),
    ("verdict", "its worst verdict over the cues"),
    ("cue", "the cue behind that verdict"),
    ("enrichment", FLAG_COLUMNS.meanings["enrichment"]),
    ("effect", FLAG_COLUMNS.meanings["effect"]),
    ("logit_change", FLAG_COLUMNS.meanings["logit_change"]),
    ("placebo_logit_change", FLAG_COLUMNS.meanings["placebo_logit_change"]),
)

#: Verdict -> badge colour (the flags layer's colours in QGIS).
BADGE: dict[str, str] = VERDICT_COLOURS

#: Outline colours on the card pictures, as the legend under them says.
OUTLINE_LEGEND = (
    ("#ffd700", "the farm"),
    ("#ff00ff", "the prediction"),
    ("#00ffff", "snow"),
    ("#ebebeb", "cloud"),
    ("#1e5aff", "water"),
)

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232b;
background:#f4f6f8;line-height:1.4}
header{background:#17324d;color:#fff;padding:18px 28px 20px}
header h1{margin:0;font-size:22px;font-weight:600}
header .meta{margin:2px 0 10px;opacity:.75;font-size:13px}
header .answer{font-size:19px;max-width:1100px;margin:6px 0 12px;font-weight:500}
nav{display:flex;gap:16px;font-size:13px}nav a{color:#bcd6f2}
main{padding:8px 28px 40px;max-width:1440px}
section{margin:22px 0 30px}
h2{font-size:19px;border-bottom:2px solid #17324d;padding-bottom:4px;margin-bottom:10px}
h3{margin:0;font-size:16px}
table{border-collapse:collapse;font-size:12.5px;background:#fff}
th,td{border:1px solid #d5dae0;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#e8edf2}td.l,th.l{text-align:left}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th:after{content:" \\2195";opacity:.35;font-size:10px}
table.sortable th.asc:after{content:" \\25B2";opacity:.8}
table.sortable th.desc:after{content:" \\25BC";opacity:.8}
.badge{display:inline-block;color:#fff;border-radius:3px;padding:0 6px;font-size:12px;
font-weight:600;white-space:nowrap}th{white-space:nowrap}
.tiles{display:flex;gap:12px;flex-wrap:wrap}
.tile{background:#fff;border:1px solid #d5dae0;border-radius:6px;padding:8px 14px;min-width:130px}
.tile b{font-size:22px;display:block}
header .tile{background:rgba(255,255,255,.1);border-color:rgba(255,255,255,.25);color:#fff}
.row{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
.note{font-size:12.5px;color:#566170;max-width:1100px}
.overview img{width:100%;max-width:1200px;border:1px solid #c8ced6;background:#fff}
.plot{max-width:600px;border:1px solid #d5dae0;background:#fff}
#training-curve{max-width:540px}.card table{margin-top:10px}
.card{background:#fff;border:1px solid #cfd6de;border-radius:8px;padding:12px 14px;
margin:0 0 16px;scroll-margin-top:10px}
.card:target{outline:3px solid #f39c12}
.card h3 .rank{color:#8795a6;margin-right:6px}
.card-body{display:flex;gap:18px;flex-wrap:wrap;margin-top:8px}
.views{display:flex;gap:10px;flex-wrap:wrap}
.views figure{margin:0;font-size:12px;color:#566170;text-align:center}
.views img.big{width:384px;height:384px;border:1px solid #9aa4b1;display:block}
.text{flex:1;min-width:380px;font-size:13.5px}
.verdicts{padding-left:18px;margin:4px 0}.verdicts li{margin:3px 0}
.cbar{width:384px;margin-top:6px;text-align:left}
.cbar .grad{height:12px;border:1px solid #9aa4b1}
.cbar .ticks{display:flex;justify-content:space-between;font-size:11px;color:#333}
.cbar .units{font-size:11px;color:#566170}
.others{display:flex;gap:8px;flex-wrap:wrap;margin:6px 0}
.others figure{margin:0;font-size:11px;text-align:center;color:#566170}
.others img{width:160px;height:160px;border:1px solid #9aa4b1;display:block}
.legend span{display:inline-block;width:12px;height:12px;border:2px solid;margin:0 3px 0 8px;
vertical-align:middle;background:#6b7683}
.links a{margin-right:10px}
.controls{margin:8px 0}.controls button{margin-right:6px}
details{background:#fff;border:1px solid #d5dae0;border-radius:6px;padding:6px 12px;margin:8px 0}
details summary{cursor:pointer;font-weight:600;font-size:14px}
dl.dict{display:grid;grid-template-columns:max-content auto;gap:2px 14px;font-size:12px;
color:#3c4652;max-width:1100px}
dl.dict dt{font-family:ui-monospace,monospace}dl.dict dd{margin:0}
.pass{color:#1e8449;font-weight:600}.fail{color:#c0392b;font-weight:600}
.scroll{overflow-x:auto}
"""

JS = """
(function () {
  function show(kind) {
    var cards = document.querySelectorAll('.card');
    var n = 0;
    for (var i = 0; i < cards.length; i++) {
      var v = cards[i].getAttribute('data-verdict');
      var on = kind === 'all' || (kind === 'flagged' && (v === 'confirmed' || v === 'unconfirmed'))
        || v === kind;
      cards[i].style.display = on ? '' : 'none';
      if (on) { n++; }
    }
    var count = document.getElementById('shown-count');
    if (count) { count.textContent = n + ' shown'; }
  }
  var buttons = document.querySelectorAll('[data-show]');
  for (var k = 0; k < buttons.length; k++) {
    buttons[k].addEventListener('click', function (ev) {
      show(ev.target.getAttribute('data-show'));
    });
  }
  show('all');

  function value(cell) {
    var v = cell.getAttribute('data-v');
    if (v === null) { v = cell.textContent.trim(); }
    var x = parseFloat(v);
    return (v !== '' && !isNaN(x) && isFinite(v)) ? x : v.toLowerCase();
  }
  function sortBy(table, col, th) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var asc = !th.classList.contains('asc');
    var heads = table.tHead.rows[0].cells;
    for (var h = 0; h < heads.length; h++) { heads[h].classList.remove('asc', 'desc'); }
    th.classList.add(asc ? 'asc' : 'desc');
    rows.sort(function (a, b) {
      var x = value(a.cells[col]), y = value(b.cells[col]);
      var blankX = x === '' || x === '\\u2013', blankY = y === '' || y === '\\u2013';
      if (blankX !== blankY) { return blankX ? 1 : -1; }
      if (typeof x === typeof y) { return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); }
      return (typeof x === 'number' ? -1 : 1) * (asc ? 1 : -1);
    });
    for (var r = 0; r < rows.length; r++) { body.appendChild(rows[r]); }
  }
  var tables = document.querySelectorAll('table.sortable');
  for (var t = 0; t < tables.length; t++) {
    (function (table) {
      var heads = table.tHead.rows[0].cells;
      for (var c = 0; c < heads.length; c++) {
        (function (col) {
          heads[col].addEventListener('click', function () { sortBy(table, col, heads[col]); });
        })(c);
      }
    })(tables[t]);
  }
})();
"""


@dataclass(frozen=True)
class Figure:
    """An image: caption and ``data:`` URI."""

    caption: str
    uri: str


@dataclass(frozen=True)
class ColourBar:
    """The colour bar of a card's attribution picture.

    Attributes:
        css: CSS gradient of the colour map, low to high.
        low: Value at the left end (``-high`` for signed maps, 0 for magnitudes).
        high: Value at the right end (the map's 99th percentile of ``|values|``).
        units: What the values are.
        method: The attribution method.
    """

    css: str
    low: float
    high: float
    units: str
    method: str


@dataclass(frozen=True)
class CardViews:
    """A card's pictures: true colour, the verdict's method over it, the other methods."""

    plain: Figure
    main: Figure | None
    colourbar: ColourBar | None
    others: list[Figure]


@dataclass(frozen=True)
class Card:
    """One farm.

    Attributes:
        anchor: HTML id (the ranking table links to it).
        rank: Place in the ranking (1 = most alarming).
        title: e.g. ``label farm w123``.
        verdict: Worst verdict over the cues.
        cue: The cue behind it (``""`` when no cue is present).
        lines: Per cue present: ``(cue, verdict, the rule that produced it in words)``.
        missing: The cues absent or not computable, in words.
        views: Pictures (``None`` when the patch could not be shown).
        rows: The farm's flag rows (one per cue).
        links: ``(label, href relative to report/)`` of its files.
        subtitle: Its patches.
    """

    anchor: str
    rank: int
    title: str
    verdict: str
    cue: str
    lines: list[tuple[str, str, str]]
    missing: str
    views: CardViews | None
    rows: list[dict[str, Any]]
    links: list[tuple[str, str]]
    subtitle: str = ""


@dataclass(frozen=True)
class Quality:
    """Model quality: per-split rows, the training curve, and a line on the threshold."""

    rows: list[dict[str, Any]]
    curve: Figure | None
    note: str


@dataclass(frozen=True)
class TriageView:
    """The triage's review lists (top rows of each) and a line on where they come from."""

    candidates: list[dict[str, Any]]
    suspects: list[dict[str, Any]]
    note: str


@dataclass(frozen=True)
class BeforeAfter:
    """One farm's before and after pictures (true colour, the site outlined)."""

    title: str
    line: str
    before: Figure | None
    after: Figure | None


@dataclass(frozen=True)
class TimelineView:
    """Farms over time: the chart, the per-window totals, before/after pictures of farms."""

    chart: Figure | None
    rows: list[dict[str, Any]]
    farms: list[BeforeAfter]
    note: str


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows (already computed)."""

    title: str
    run: str
    generated: str
    answer: str
    summary: dict[str, Any]
    quality: Quality
    overview: Figure | None
    overview_note: str
    ranking: list[dict[str, Any]]
    cards: list[Card]
    flags: list[dict[str, Any]]
    run_flags: list[dict[str, Any]]
    sanity: dict[str, Any]
    faithfulness: list[dict[str, Any]]
    cues: list[dict[str, Any]]
    plots: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    triage: TriageView | None = None
    timeline: TimelineView | None = None
    concepts: dict[str, Any] = field(default_factory=dict)


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
    text = html.escape(verdict.replace("_", " "))
    return f'<span class="badge" style="background:{colour}">{text}</span>'


def _raw(value: Any) -> str:
    """The sort key of a cell (``data-v``): the number itself, or empty for missing."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(int(value))
    if isinstance(value, int | float):
        return repr(float(value)) if math.isfinite(float(value)) else ""
    return html.escape(str(value), quote=True)


def dictionary(columns: Columns) -> str:
    """The meaning of each column, as a definition list."""
    items = "".join(
        f"<dt>{html.escape(name)}</dt><dd>{html.escape(meaning)}</dd>"
        for name, meaning in columns.pairs()
    )
    return f'<dl class="dict">{items}</dl>'


def table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    table_id: str = "",
    left: Sequence[str] = (),
    cells: Mapping[str, Callable[[Mapping[str, Any]], str]] | None = None,
    sortable: bool = True,
) -> str:
    """An HTML table of ``rows`` restricted to ``columns``.

    Verdict cells become badges; ``cells`` maps a column to a function writing its cell's
    HTML (e.g. a link). Sortable tables sort on a header click, numbers by value.
    """
    if not rows:
        return '<p class="note">(none)</p>'
    ident = f' id="{table_id}"' if table_id else ""
    cls = ' class="sortable"' if sortable else ""
    head = "".join(f'<th class="{"l" if c in left else ""}">{html.escape(c)}</th>' for c in columns)
    body = []
    for row in rows:
        parts = []
        for c in columns:
            v = row.get(c)
            if cells and c in cells:
                text = cells[c](row)
            else:
                text = badge(str(v)) if c == "verdict" and v else fmt(v)
            parts.append(f'<td class="{"l" if c in left else ""}" data-v="{_raw(v)}">{text}</td>')
        body.append("<tr>" + "".join(parts) + "</tr>")
    return (
        f'<div class="scroll"><table{ident}{cls}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


# ------------------------------------------------------------------------------- sections
def _concept_cell(entry: Mapping[str, Any]) -> str:
    """One concept's per-layer TCAV numbers (score vs the random concept's, p-value)."""
    if entry.get("verdict") == "not_testable":
        return html.escape(str(entry.get("reason") or ""))
    parts = [
        f"{html.escape(layer)}: {fmt(v.get('tcav_score'), 2)} vs {fmt(v.get('null_score'), 2)}"
        f" (p {fmt(v.get('p_value'), 2)})"
        for layer, v in entry.get("layers", {}).items()
    ]
    return "; ".join(parts)


def _concepts(doc: Mapping[str, Any]) -> str:
    """The model-level verdicts of the concept tests, shown beside the per-farm ones."""
    if not doc.get("concepts"):
        return (
            '<div id="concepts"><h3>Model-level concept tests</h3><p class="note">Not run '
            "(audit.concepts: false): per-farm verdicts only.</p></div>"
        )
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{badge(str(e.get('verdict')))}</td>"
        f"<td>{fmt(e.get('examples'))}</td><td>{_concept_cell(e)}</td></tr>"
        for name, e in doc["concepts"].items()
    )
    layers = ", ".join(doc.get("layers", []))
    return (
        '<div id="concepts"><h3>Model-level concept tests</h3><p class="note">Does the model as '
        "a whole use each cue as evidence of a farm? TCAV at layers "
        f"{html.escape(layers)}: the share of farm crops whose farm output rises along the cue's "
        f"concept, against {fmt(doc.get('random_concepts'))} random concepts of plain background "
        f"(t-test at {fmt(doc.get('alpha'))}, Bonferroni over layers). A concept with too few "
        "examples is not testable, which is not the same as no reliance.</p>"
        '<div class="scroll"><table id="concepts-table"><thead><tr><th>concept</th>'
        "<th>verdict</th><th>examples</th><th>TCAV score vs random (p)</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div></div>"
    )


def _header(data: ReportData) -> str:
    s = data.summary
    test_iou = next((r["pixel_iou"] for r in data.quality.rows if r["split"] == "test"), None)
    tiles = [
        ("farms audited", s.get("targets", 0)),
        ("flagged", s.get("flagged", 0)),
        ("confirmed", s.get("confirmed", 0)),
        ("patches", s.get("patches", 0)),
        ("test pixel IoU", test_iou),
    ]
    tile_html = "".join(
        f'<div class="tile"><b>{fmt(v)}</b>{html.escape(k)}</div>' for k, v in tiles
    )
    nav = "".join(
        f'<a href="#{i}">{t}</a>'
        for i, t in (
            ("quality", "Model quality"),
            ("overview", "Overview map"),
            *([("timeline", "Farms over time")] if data.timeline is not None else []),
            ("farms", "Farms by concern"),
            ("checks", "Checks of the explanations"),
            *([("triage", "Label triage")] if data.triage is not None else []),
            ("tables", "Tables"),
        )
    )
    return (
        f'<header><h1>{html.escape(data.title)}</h1><p class="meta">run '
        f"<b>{html.escape(data.run)}</b> · generated {html.escape(data.generated)}</p>"
        f'<p class="answer" id="answer">{html.escape(data.answer)}</p>'
        f'<div class="tiles">{tile_html}</div><nav>{nav}</nav></header>'
    )


def _quality(data: ReportData) -> str:
    q = data.quality
    curve = (
        f'<figure style="margin:0;max-width:560px"><img class="plot" id="training-curve" '
        f'alt="training curve" '
        f'src="{q.curve.uri}"><figcaption class="note">{html.escape(q.curve.caption)}'
        "</figcaption></figure>"
        if q.curve
        else '<p class="note">No training log found (train/logs/csv).</p>'
    )
    rows = table(
        q.rows,
        list(QUALITY_COLUMNS),
        table_id="quality-table",
        left=["split", "farms"],
        sortable=False,
    )
    return (
        '<section id="quality"><h2>Model quality</h2><div class="row"><div>'
        f'{rows}<p class="note" style="max-width:640px">{html.escape(q.note)}</p></div>'
        f"{curve}</div><details><summary>What the columns mean</summary>"
        f"{dictionary(QUALITY_COLUMNS)}</details></section>"
    )


def _overview(data: ReportData) -> str:
    if data.overview is None:
        body = f'<p class="note">{html.escape(data.overview_note)}</p>'
    else:
        body = (
            f'<div class="overview"><img id="overview-map" alt="overview map" '
            f'src="{data.overview.uri}"></div><p class="note">'
            f"{html.escape(data.overview_note)}</p>"
        )
    return f'<section id="overview"><h2>Overview map</h2>{body}</section>'


def _farm_link(row: Mapping[str, Any]) -> str:
    return f'<a href="#{html.escape(str(row["anchor"]))}">{html.escape(str(row["farm"]))}</a>'


def _colourbar(bar: ColourBar) -> str:
    mid = (bar.low + bar.high) / 2
    return (
        f'<div class="cbar"><div class="grad" style="background:{bar.css}"></div>'
        f'<div class="ticks"><span>{bar.low:.2g}</span><span>{mid:.2g}</span>'
        f'<span>{bar.high:.2g}</span></div><div class="units">{html.escape(bar.method)}: '
        f"{html.escape(bar.units)}; colour saturates at the map's 99th percentile</div></div>"
    )


def _legend(cues: Sequence[str]) -> str:
    shown = [(c, t) for c, t in OUTLINE_LEGEND if t in ("the farm", "the prediction", *cues)]
    items = "".join(f'<span style="border-color:{c}"></span>{html.escape(t)}' for c, t in shown)
    return f'<p class="legend note">Outlines:{items}</p>'


def _card(card: Card) -> str:
    views = card.views
    pictures = '<p class="note">(the patch could not be shown)</p>'
    others = ""
    if views is not None:
        big = [views.plain, *([views.main] if views.main else [])]
        figs = []
        for i, f in enumerate(big):
            bar = _colourbar(views.colourbar) if i == 1 and views.colourbar else ""
            figs.append(
                f'<figure><img class="big" alt="{html.escape(f.caption)}" src="{f.uri}">'
                f"<figcaption>{html.escape(f.caption)}</figcaption>{bar}</figure>"
            )
        pictures = f'<div class="views">{"".join(figs)}</div>'
        others = "".join(
            f'<figure><img alt="{html.escape(f.caption)}" src="{f.uri}">'
            f"<figcaption>{html.escape(f.caption)}</figcaption></figure>"
            for f in views.others
        )
        others = f'<div class="others">{others}</div>' if others else ""
    lines = "".join(
        f"<li><b>{html.escape(cue)}</b> {badge(verdict)} {html.escape(words)}</li>"
        for cue, verdict, words in card.lines
    )
    missing = f'<p class="note">{html.escape(card.missing)}.</p>' if card.missing else ""
    links = " ".join(
        f'<a href="{html.escape(href)}">{html.escape(label)}</a>' for label, href in card.links
    )
    cues = [row["cue"] for row in card.rows]
    cue_text = f" · {html.escape(card.cue)}" if card.cue else ""
    return (
        f'<article class="card" id="{html.escape(card.anchor)}" '
        f'data-verdict="{html.escape(card.verdict)}"><h3><span class="rank">#{card.rank}</span>'
        f"{html.escape(card.title)} {badge(card.verdict)}{cue_text}</h3>"
        f'<p class="note">{html.escape(card.subtitle)}</p><div class="card-body">{pictures}'
        f'<div class="text"><ul class="verdicts">{lines}</ul>{missing}{_legend(cues)}{others}'
        f'<p class="links note">Files: {links}</p></div></div>'
        + table(card.rows, list(CARD_TABLE), left=["cue"], sortable=False)
        + "</article>"
    )


def _farms(data: ReportData) -> str:
    buttons = "".join(
        f'<button type="button" data-show="{k}">{k.replace("_", " ")}</button>'
        for k in ("all", "flagged", "confirmed", "not_flagged")
    )
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in data.notes)
    ranking = table(
        data.ranking,
        list(RANK_TABLE),
        table_id="ranking-table",
        left=["farm", "cue"],
        cells={"farm": _farm_link},
    )
    cards = "".join(_card(c) for c in data.cards) or '<p class="note">(no farm targets)</p>'
    return (
        '<section id="farms"><h2>Farms by concern</h2><p class="note">Confirmed first (removing '
        "the cue moved the prediction, and more than removing a placebo did), then flags that "
        "removing the cue did not confirm, then the rest, each by enrichment. Click a farm to "
        "open its card; click a column to sort.</p>"
        f"{_concepts(data.concepts)}"
        f"{notes}{ranking}<details><summary>What the columns mean</summary>"
        f"{dictionary(RANK_TABLE)}</details>"
        f'<div class="controls">Show: {buttons}<span id="shown-count" class="note"></span></div>'
        f"{cards}</section>"
    )


def _pf(value: Any) -> str:
    if value is None:
        return "–"
    return '<span class="pass">pass</span>' if value else '<span class="fail">FAIL</span>'


def _sanity(s: Mapping[str, Any]) -> str:
    if "model_randomization" not in s:
        reason = s.get("skipped", "not run")
        return f'<p class="note">Randomization checks not run: {html.escape(str(reason))}</p>'
    mr = s["model_randomization"]
    head = "".join(f"<th>{html.escape(str(st)[-28:])}</th>" for st in mr.get("steps", []))
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
    verdicts = {m: v.get("pass") for m, v in mr.get("methods", {}).items()}
    failed = [m for m, ok in verdicts.items() if ok is False]
    if failed:
        lead = (
            f"Failed the model randomization test: {', '.join(failed)}. Their maps barely "
            "change when the weights are re-initialized, so they do not explain this model."
        )
    else:
        lead = f"Every method checked passed the model randomization test ({', '.join(verdicts)})."
    note = (
        "A faithful method's maps change when the model's weights are re-initialized (from the "
        "head down) or the model is trained on shuffled labels. Cells: Spearman rank "
        "correlation of |maps| / SSIM against the trained model's maps. "
        f"{s.get('criterion', '')}. Patches: {', '.join(s.get('patches', []))}."
        + (f" Data randomization not run: {dskip}." if dskip else "")
    )
    return (
        f"<p><b>{html.escape(lead)}</b></p>"
        f'<p class="note">{html.escape(note)}</p><div class="scroll"><table id="sanity-table">'
        f'<thead><tr><th class="l">method</th>{head}<th>model rand.</th>'
        f"<th>shuffled labels</th><th>data rand.</th></tr></thead><tbody>{''.join(rows)}"
        "</tbody></table></div>"
    )


def _checks(data: ReportData) -> str:
    plots = "".join(
        f'<img class="plot" alt="{html.escape(f.caption)}" title="{html.escape(f.caption)}" '
        f'src="{f.uri}">'
        for f in data.plots
    )
    return (
        '<section id="checks"><h2>Checks of the explanations</h2>'
        + _sanity(data.sanity)
        + (f'<div class="row" id="plots">{plots}</div>' if plots else "")
        + "</section>"
    )


def _picture(figure: Figure | None, label: str) -> str:
    if figure is None:
        return f'<div class="note">{html.escape(label)}: no picture</div>'
    return (
        f'<figure><img alt="{html.escape(figure.caption)}" src="{figure.uri}">'
        f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>"
    )


def _timeline(view: TimelineView | None) -> str:
    if view is None:
        return ""
    chart = (
        f'<img id="timeline-chart" alt="installed area and farms per window" '
        f'src="{view.chart.uri}">'
        if view.chart is not None
        else ""
    )
    farms = "".join(
        f'<div class="card"><h3>{html.escape(f.title)}</h3><p class="note">'
        f'{html.escape(f.line)}</p><div class="row">{_picture(f.before, "before")}'
        f"{_picture(f.after, 'after')}</div></div>"
        for f in view.farms
    )
    return (
        '<section id="timeline"><h2>Farms over time</h2><p class="note">'
        + html.escape(view.note)
        + f"</p>{chart}"
        + table(view.rows, list(WINDOW_COLUMNS), table_id="timeline-table", left=["window"])
        + "<details><summary>What the columns mean</summary>"
        + dictionary(WINDOW_COLUMNS)
        + "</details>"
        + (f"<h3>Before and after</h3>{farms}" if farms else "")
        + "</section>"
    )


def _triage(view: TriageView | None) -> str:
    if view is None:
        return ""
    return (
        '<section id="triage"><h2>Label triage</h2><p class="note">'
        + html.escape(view.note)
        + "</p><h3>Farms OpenStreetMap may be missing (candidates)</h3>"
        + table(
            view.candidates,
            list(CANDIDATE_TABLE),
            table_id="candidates-table",
            left=["task_id", "object_id", "cue", "dates"],
        )
        + "<h3>OpenStreetMap farms the model does not find (suspects)</h3>"
        + table(
            view.suspects,
            list(SUSPECT_TABLE),
            table_id="suspects-table",
            left=["task_id", "farm_id", "osm_timestamp", "reason", "cue"],
        )
        + "<details><summary>What the columns mean</summary>"
        + dictionary(
            CANDIDATE_TABLE
            + SUSPECT_TABLE.pick([c for c in SUSPECT_TABLE if c not in CANDIDATE_TABLE])
        )
        + "</details></section>"
    )


def _details(
    title: str, ident: str, rows: Sequence[Mapping[str, Any]], cols: Columns, left: Sequence[str]
) -> str:
    return (
        f'<details id="{ident}-details"><summary>{html.escape(title)} ({len(rows)} rows)</summary>'
        f"{dictionary(cols)}"
        + table(rows, list(cols), table_id=f"{ident}-table", left=left)
        + "</details>"
    )


def _tables(data: ReportData) -> str:
    per_cue = [{"cue": c, **v} for c, v in data.summary.get("per_cue", {}).items()]
    return (
        '<section id="tables"><h2>Tables</h2><p class="note">Collapsed; click a title to open, '
        "a column to sort. The same tables are CSV files under audit/.</p>"
        + _details("Flags per cue", "per-cue", per_cue, PER_CUE_TABLE, ["cue"])
        + _details(
            "Flags per farm and cue (audit/flags.csv)",
            "flags",
            data.flags,
            FLAG_TABLE,
            ["target", "target_id", "cue", "method", "cf_status"],
        )
        + _details(
            "Enrichment per run, pooled over patches (audit/run_flags.csv)",
            "run-flags",
            data.run_flags,
            RUN_FLAG_TABLE,
            ["target", "method", "cue"],
        )
        + _details(
            "Faithfulness (audit/faithfulness.csv)",
            "faithfulness",
            data.faithfulness,
            FAITHFULNESS_TABLE,
            ["patch_id", "method", "status", "reason"],
        )
        + _details(
            "Cue masks per patch (audit/cues.csv)",
            "cues",
            data.cues,
            CUE_TABLE,
            ["patch_id", "cue", "status", "source", "reason"],
        )
        + "</section>"
    )


def render(data: ReportData) -> str:
    """The whole page as one string (UTF-8, no external resources)."""
    title = html.escape(data.title)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f'<title>{title}</title><link rel="icon" href="data:,"><style>{CSS}</style></head>'
        "<body>"
        + _header(data)
        + "<main>"
        + _quality(data)
        + _overview(data)
        + _timeline(data.timeline)
        + _farms(data)
        + _checks(data)
        + _triage(data.triage)
        + _tables(data)
        + f"</main><script>{JS}</script></body></html>\n"
    )
