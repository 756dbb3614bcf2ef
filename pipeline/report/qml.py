"""QGIS style files (``.qml``) for the attribution rasters and the flags layer."""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

#: Verdict -> fill colour (hex) in the flags layer.
VERDICT_COLOURS: dict[str, str] = {
    "confirmed": "#d7191c",
    "unconfirmed": "#fdae61",
    "not_flagged": "#1a9641",
    "cue_absent": "#a6d96a",
    "not_computable": "#969696",
}


def attribution_qml(band: int, limit: float) -> str:
    """Singleband pseudocolor style of an attribution COG (diverging blue-white-red).

    Args:
        band: 1-based band to show (the ``aggregate`` band is ``len(BANDS) + 1``).
        limit: Symmetric value range ``[-limit, limit]`` of the colour ramp.
    """
    lo, hi = -abs(limit), abs(limit)
    stops = [
        (lo, "#2166ac"),
        (lo / 2, "#92c5de"),
        (0.0, "#f7f7f7"),
        (hi / 2, "#f4a582"),
        (hi, "#b2182b"),
    ]
    items = "\n".join(
        f'            <item alpha="255" value="{v:.6g}" label="{v:.3g}" color="{c}"/>'
        for v, c in stops
    )
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.28" styleCategories="Symbology">
  <pipe>
    <rasterrenderer type="singlebandpseudocolor" band="{band}" opacity="0.8"
                    classificationMin="{lo:.6g}" classificationMax="{hi:.6g}" alphaBand="-1">
      <rastershader>
        <colorrampshader colorRampType="INTERPOLATED" classificationMode="1" clip="0"
                         minimumValue="{lo:.6g}" maximumValue="{hi:.6g}">
{items}
        </colorrampshader>
      </rastershader>
    </rasterrenderer>
  </pipe>
</qgis>
"""


def flags_qml(field: str = "verdict") -> str:
    """Categorized polygon style of ``flags.gpkg`` by ``field`` (the verdict)."""
    cats, syms = [], []
    for i, (value, colour) in enumerate(VERDICT_COLOURS.items()):
        cats.append(
            f'      <category render="true" value={quoteattr(value)} symbol="{i}" '
            f"label={quoteattr(value)}/>"
        )
        syms.append(f"""      <symbol type="fill" name="{i}" alpha="0.6">
        <layer class="SimpleFill">
          <Option type="Map">
            <Option type="QString" name="color" value="{colour}"/>
            <Option type="QString" name="outline_color" value="#000000"/>
            <Option type="QString" name="outline_width" value="0.4"/>
          </Option>
        </layer>
      </symbol>""")
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.28" styleCategories="Symbology">
  <renderer-v2 type="categorizedSymbol" attr={quoteattr(field)}>
    <categories>
{chr(10).join(cats)}
    </categories>
    <symbols>
{chr(10).join(syms)}
    </symbols>
  </renderer-v2>
</qgis>
"""
