"""Test and benchmark support, not part of the pipeline's runtime (like ``numpy.testing``).

No stage imports this package. It holds real stand-ins for remote services that the tests
(``tests/``) and the benchmarks (:mod:`pipeline.bench`) run against on 127.0.0.1:

- :mod:`pipeline.testing.stac_server`: a STAC API and Range-capable COG file server with
  latency and fault injection (``python -m pipeline.testing.stac_server ROOT``).
"""
