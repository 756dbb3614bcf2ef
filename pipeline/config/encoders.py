"""Which ``train.encoder`` names segmentation-models-pytorch can build.

Common names are checked against :data:`COMMON_ENCODERS` without importing the library (a config
loads in well under a second); any other name is checked against the installed library's own
list (``tu-<name>`` against timm's models), which takes a few seconds once.
"""

from __future__ import annotations

import difflib
from typing import Final

#: Encoders of segmentation-models-pytorch 0.3-0.5 accepted without importing it.
COMMON_ENCODERS: Final[frozenset[str]] = frozenset(
    {
        *(f"resnet{d}" for d in (18, 34, 50, 101, 152)),
        "resnext50_32x4d",
        *(f"efficientnet-b{i}" for i in range(8)),
        *(f"timm-efficientnet-b{i}" for i in range(8)),
        "mobilenet_v2",
        *(f"densenet{d}" for d in (121, 161, 169, 201)),
        *(f"vgg{d}" for d in (11, 13, 16, 19)),
        *(f"mit_b{i}" for i in range(6)),
    }
)


def installed_encoders() -> list[str]:
    """Every encoder name the installed segmentation-models-pytorch registers."""
    import segmentation_models_pytorch as smp

    return sorted(smp.encoders.get_encoder_names())


def encoder_problem(name: str) -> str | None:
    """Why ``name`` is not an encoder the model can be built with, or ``None`` when it is.

    The message lists the closest valid names.
    """
    if name in COMMON_ENCODERS:
        return None
    if name.startswith("tu-"):
        import timm

        if timm.is_model(name[3:]):
            return None
        close = difflib.get_close_matches(name[3:], timm.list_models(), n=3)
        return f"timm has no model {name[3:]!r}" + (f"; did you mean {close}?" if close else "")
    known = installed_encoders()
    if name in known:
        return None
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return (
        f"segmentation-models-pytorch has no encoder {name!r}; {hint}valid names include "
        f"{', '.join(sorted(COMMON_ENCODERS)[:8])}, ... (all: "
        "segmentation_models_pytorch.encoders.get_encoder_names(); timm models as tu-<name>)"
    )
