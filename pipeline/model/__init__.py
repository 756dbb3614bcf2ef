"""The segmentation model: construction, normalization, and the exported model file."""
