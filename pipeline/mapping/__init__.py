"""Wall-to-wall mapping: an area cut into chunks per UTM zone, composited, predicted on Dask.

``grid`` (area -> zones -> chunks), ``search`` (one catalog search per area), ``provenance``
(the acquisitions table), ``reads`` (COG reads by source block), ``composite`` (clearest-first
per-pixel composite), ``chunks`` (the per-chunk Dask tasks), ``pieces`` (a chunk's polygons),
``engine`` (submits the tasks), ``mosaic`` (per-zone COGs), ``farms`` (pieces merged across
seams and zones), ``gaps``, ``catalog`` (STAC of the outputs), ``patches`` (composite patches
around mapped farms) and ``region`` (all of it for one area, as the map stage runs it).
"""
