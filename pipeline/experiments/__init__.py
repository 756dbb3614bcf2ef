"""Experiments that prove the product works (each runnable as ``python -m``)."""
