"""Geospatial I/O and pure geometry helpers (rasters, windows, CRS, OSM, STAC live here)."""
