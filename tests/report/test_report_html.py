"""The report page: order of its sections, self-containment, links, tables and their meanings."""

from __future__ import annotations

import html
import re

from pipeline.audit.flags import FLAG_COLUMNS
from pipeline.report.html import (
    CARD_TABLE,
    FLAG_TABLE,
    Quality,
    ReportData,
    dictionary,
    render,
    table,
)


def test_page_opens_with_the_answer_then_quality_map_farms_and_tables_last(reported) -> None:
    _, paths = reported
    page = paths.report.read_text()
    order = [
        'id="answer"',
        '<section id="quality">',
        '<section id="overview">',
        '<section id="farms">',
        '<section id="checks">',
        '<section id="tables">',
    ]
    positions = [page.index(mark) for mark in order]
    assert positions == sorted(positions)
    answer = re.search(r'<p class="answer" id="answer">(.*?)</p>', page).group(1)
    assert answer.startswith(  # a random stand-in model: flagged, but nothing moves
        "The model did not lean on the cues tested here (snow): attribution pointed at a cue on "
        "1 farm, but removing the cue moved none of them."
    )
    assert 'id="training-curve"' in page and 'id="overview-map"' in page
    assert "0.25" in page  # the test split's pixel IoU from predict/metrics.json


def test_ranking_links_to_cards_and_cards_link_to_their_files(reported) -> None:
    _, paths = reported
    page = paths.report.read_text()
    assert page.count('<article class="card"') == 2
    for anchor in ("card-label-farms-w1", "card-label-farms-w2"):
        assert f'href="#{anchor}"' in page and f'id="{anchor}"' in page
    first = page.index('id="card-label-farms-w1"')
    assert first < page.index('id="card-label-farms-w2"')  # the flagged farm ranks first
    hrefs = set(re.findall(r'href="(\.\./[^"]+)"', page))
    assert "../fetch/patches/p0.tif" in hrefs and "../audit/flags.gpkg" in hrefs
    for href in hrefs:  # every link from a card resolves to a file of the run
        assert (paths.stage_dir("report") / href).resolve().is_file(), href
    assert "flagged: enrichment" in page and "when the snow was removed" in page
    bars = re.findall(r'<div class="units">(.*?)</div>', page)
    assert bars and all("logit" in b for b in bars)  # each colour bar says what its values are


def test_long_tables_are_last_collapsed_sortable_with_column_meanings(reported) -> None:
    _, paths = reported
    page = paths.report.read_text()
    tables = page[page.index('<section id="tables">') :]
    for ident in ("flags", "run-flags", "faithfulness", "cues", "per-cue"):
        assert f'<details id="{ident}-details">' in tables
        assert f'<table id="{ident}-table" class="sortable">' in tables
    assert html.escape(FLAG_COLUMNS.meanings["enrichment"]) in tables
    assert not re.search(r"""(src|href)=["']https?:""", page)
    assert '<link rel="stylesheet"' not in page and "<script src" not in page


def test_render_escapes_and_formats() -> None:
    data = ReportData(
        title="<T>",
        run="r",
        generated="now",
        answer="No farm was audited.",
        summary={},
        quality=Quality([], None, "no scores"),
        overview=None,
        overview_note="no layers",
        ranking=[],
        cards=[],
        flags=[],
        run_flags=[],
        sanity={"skipped": "budget 0"},
        faithfulness=[],
        cues=[],
    )
    page = render(data)
    assert "<title>&lt;T&gt;</title>" in page and "no layers" in page
    assert "Randomization checks not run: budget 0" in page
    assert "No training log found" in page
    assert "–" in table([{"a": float("nan")}], ["a"])
    assert 'data-v="2.5"' in table([{"a": 2.5}], ["a"])
    assert "<dt>cue</dt>" in dictionary(CARD_TABLE) and set(FLAG_TABLE) <= set(FLAG_COLUMNS)
