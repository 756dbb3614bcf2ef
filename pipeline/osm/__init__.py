"""OpenStreetMap solar farms: Overpass client, pyosmium extract reader, geometry rules."""
