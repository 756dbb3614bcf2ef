"""Geospatial helpers: raster I/O and grids, CRS and UTM zones, masks, patch plans, splits, AOIs."""
