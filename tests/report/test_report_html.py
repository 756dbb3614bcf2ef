"""The report page and QGIS styles: content, self-containment, valid XML."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from pipeline.report.html import Card, Figure, ReportData, render, table


def test_report_has_every_section_and_no_external_resource(reported) -> None:
    _, paths = reported
    page = paths.report.read_text()
    for section in ("summary", "flags", "cards", "sanity", "faithfulness", "plots", "cues"):
        assert f'<section id="{section}">' in page
    assert page.count('class="card"') == 2
    assert 'data-verdict="not_flagged"' in page
    assert "label_farms w1" in page and "label_farms w2" in page
    assert page.count("data:image/png;base64,") >= 2 * 6 + 2  # card pictures and plots
    assert not re.search(r"""(src|href)=["']https?:""", page)
    assert '<link rel="stylesheet"' not in page and "<script src" not in page


def test_qml_styles_are_xml(reported) -> None:
    _, paths = reported
    raster = ET.fromstring(paths.report_style("attribution").read_text().split("\n", 1)[1])
    assert raster.find(".//rasterrenderer").get("band") == "11"
    flags = ET.fromstring(paths.report_style("flags").read_text().split("\n", 1)[1])
    values = {c.get("value") for c in flags.iter("category")}
    assert {"confirmed", "unconfirmed", "not_flagged", "not_computable"} <= values


def test_render_escapes_and_formats() -> None:
    data = ReportData(
        title="<T>",
        run="r",
        generated="now",
        summary={},
        flags=[],
        run_flags=[],
        cards=[
            Card(
                "label_farms <x>",
                "confirmed",
                "s",
                [Figure("RGB", "data:,")],
                [{"cue": "snow", "enrichment": float("nan"), "verdict": "confirmed"}],
            )
        ],
        sanity={"skipped": "budget 0"},
        faithfulness=[],
        cues=[],
    )
    page = render(data)
    assert "<title>&lt;T&gt;</title>" in page and "label_farms &lt;x&gt;" in page
    assert "Not run: budget 0" in page
    assert "–" in table([{"a": float("nan")}], ["a"])
