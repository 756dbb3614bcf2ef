"""Fixtures of the attribution tests (a tiny model and input, in ``support.attribution``)."""

from support.attribution import one_torch_thread, tiny_input, tiny_model  # noqa: F401
