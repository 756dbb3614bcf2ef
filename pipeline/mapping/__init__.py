"""Wall-to-wall mapping: an area cut into chunks per UTM zone, composited, predicted on Dask.

``grid`` (area -> zones -> chunks), ``search`` (one catalog search per area), ``provenance``
(the acquisitions table), ``reads`` (COG reads by source block), ``composite`` (clearest-first
per-pixel composite), ``chunks`` (the per-chunk Dask tasks), ``engine`` (submits them),
``mosaic`` (per-zone COGs), ``farms`` (polygons merged across seams and zones), ``gaps``,
``catalog`` (STAC of the outputs) and ``patches`` (composite patches around mapped farms).
"""
