"""Spurious-cue audit: cue masks, attribution reliance, counterfactuals, explanation checks."""
