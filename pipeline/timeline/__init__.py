"""Solar farms over time: sites, their history over the map's windows, the land they replaced."""
