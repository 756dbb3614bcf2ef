"""Find solar farms in Sentinel-2 imagery and prove why the model finds them.

The pipeline is a sequence of stages (see :data:`pipeline.stages.STAGES`), each a pure
function ``run(cfg, paths) -> StageOutput`` over a typed :class:`pipeline.config.RunConfig`
and the derived artefact paths of one run (:class:`pipeline.paths.RunPaths`).
"""

import os

# OpenMP threads that busy-wait starve each other on small shared machines (a tiny forward
# pass measured 20x slower on 2 loaded cores); they must yield. Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
