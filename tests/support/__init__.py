"""Shared test support, one module per package it serves (``support.stac`` for ``pipeline.stac``
and the fetch stage, ``support.osm`` for ``pipeline.osm`` and the labels stage, ...).

Fixtures live beside their helpers; each test folder's ``conftest.py`` imports the ones it uses.
"""
