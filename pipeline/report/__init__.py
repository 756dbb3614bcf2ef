"""The analysts' report: self-contained HTML, pictures as data URIs, QGIS styles."""
