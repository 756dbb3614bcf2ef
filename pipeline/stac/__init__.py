"""Sentinel-2 L2A from STAC: item sources, scene choice, harmonized windowed COG reads.

- :mod:`~pipeline.stac.source`: where items come from (a STAC API or a static catalog), behind
  one ``ItemSource`` protocol.
- :mod:`~pipeline.stac.scene`: which scene serves a patch (clear share from SCL, then date).
- :mod:`~pipeline.stac.assets`: band asset keys per catalog, and href signing.
- :mod:`~pipeline.stac.radiometry`: the +1000 DN offset rule per item (processing baseline).
- :mod:`~pipeline.stac.read`: windowed reads of a band onto a patch grid, retried.
- :mod:`~pipeline.stac.http`: the shared retry policy (:mod:`pipeline.net`) applied to STAC.
- :mod:`~pipeline.stac.patch`: one patch end to end (screen scenes, read bands, harmonize).

A test and benchmark STAC server lives in :mod:`pipeline.testing.stac_server`, outside the
runtime package.
"""
