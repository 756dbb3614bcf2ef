"""Find solar farms in Sentinel-2 imagery and prove why the model finds them.

The pipeline is a sequence of stages (see :data:`pipeline.stages.STAGES`), each a pure
function ``run(cfg, paths) -> Manifest`` over a typed :class:`pipeline.config.RunConfig`
and the derived artefact paths of one run (:class:`pipeline.paths.RunPaths`).
"""

__version__ = "0.1.0"
