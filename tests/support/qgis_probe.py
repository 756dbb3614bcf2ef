"""Load rasters and vector layers in real QGIS and print how each is rendered (JSON).

Run with the Python that has QGIS's bindings (Debian: /usr/bin/python3 with python3-qgis),
headless: ``QT_QPA_PLATFORM=offscreen /usr/bin/python3 qgis_probe.py FILE...``. Each layer is
loaded as a user would (QgsRasterLayer / QgsVectorLayer), so QGIS applies the ``.qml`` beside
the file as its default style. Prints ``{file: {"renderer": ..., ...}}``.
"""

from __future__ import annotations

import json
import sys

from qgis.core import QgsApplication, QgsRasterLayer, QgsVectorLayer


def raster(path: str) -> dict:
    layer = QgsRasterLayer(path, "layer")
    if not layer.isValid():
        return {"valid": False}
    renderer = layer.renderer()
    out = {"valid": True, "renderer": renderer.type(), "scale": layer.dataProvider().bandScale(1)}
    if renderer.type() == "multibandcolor":
        out["bands"] = [renderer.redBand(), renderer.greenBand(), renderer.blueBand()]
        enhancement = renderer.redContrastEnhancement()
        out["red_range"] = [enhancement.minimumValue(), enhancement.maximumValue()]
    elif renderer.type() == "paletted":
        out["classes"] = {str(int(c.value)): c.label for c in renderer.classes()}
    elif renderer.type() == "singlebandpseudocolor":
        out["band"] = renderer.band()
        out["range"] = [renderer.classificationMin(), renderer.classificationMax()]
    return out


def vector(path: str) -> dict:
    layer = QgsVectorLayer(path, "layer", "ogr")
    if not layer.isValid():
        return {"valid": False}
    renderer = layer.renderer()
    out = {"valid": True, "renderer": renderer.type(), "features": layer.featureCount()}
    if renderer.type() == "categorizedSymbol":
        out["field"] = renderer.classAttribute()
        out["categories"] = [c.value() for c in renderer.categories()]
    return out


def main(files: list[str]) -> None:
    app = QgsApplication([], False)
    app.initQgis()
    result = {f: vector(f) if f.endswith(".gpkg") else raster(f) for f in files}
    print(json.dumps(result))
    app.exitQgis()


if __name__ == "__main__":
    main(sys.argv[1:])
