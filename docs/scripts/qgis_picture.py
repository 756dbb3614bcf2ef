"""Render the README's QGIS picture from a finished run, in real QGIS, without a screen.

Loads, as an analyst would by dragging them in, the zone mosaic of the patches, one farm's
attribution raster and ``audit/flags.gpkg``; each opens with the style beside it. Renders the
patch's extent to a PNG. Run with the Python that has QGIS's bindings:

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 docs/scripts/qgis_picture.py \\
        data/runs/demo attribute/integrated_gradients/label_farms/p00000__w1044.tif \\
        docs/images/qgis.png
"""

from __future__ import annotations

import sys
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize, Qt
from qgis.PyQt.QtGui import QColor, QFont, QPainter

#: Side of the picture in pixels.
SIDE = 760


def main(run: Path, attribution: str, out: Path) -> None:
    app = QgsApplication([], False)
    app.initQgis()
    raster = QgsRasterLayer(str(run / attribution), "attribution")
    epsg = raster.crs().postgisSrid()
    patches = QgsRasterLayer(str(run / "fetch" / f"patches_{epsg}.vrt"), "patches")
    flags = QgsVectorLayer(str(run / "audit" / "flags.gpkg"), "flags", "ogr")
    for layer in (raster, patches, flags):
        assert layer.isValid(), layer.name()
    settings = QgsMapSettings()
    settings.setLayers([flags, raster, patches])  # top first
    settings.setDestinationCrs(raster.crs())
    settings.setExtent(raster.extent())  # the attribution's patch
    settings.setOutputSize(QSize(SIDE, SIDE))
    settings.setBackgroundColor(QColor("white"))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    painter = QPainter(image)
    painter.fillRect(0, 0, SIDE, 26, QColor(255, 255, 255, 220))
    painter.setFont(QFont("DejaVu Sans", 10))
    painter.setPen(Qt.black)
    painter.drawText(
        8,
        18,
        f"QGIS, default styles: patches_{epsg}.vrt · {Path(attribution).name} · flags.gpkg",
    )
    painter.end()
    image.save(str(out))
    del job, settings, raster, patches, flags  # layers go before QGIS does
    app.exitQgis()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
