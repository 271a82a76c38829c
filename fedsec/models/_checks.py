"""Value checks the model constructors share; each error names the model, the value and what
was expected."""
from __future__ import annotations


def image_shape(model: str, input_shape: tuple[int, ...], min_side: int = 1
                ) -> tuple[int, int, int]:
    """``(C, H, W)`` from ``input_shape``; H and W must be at least ``min_side`` (the
    smallest image the architecture's convolutions and poolings leave a pixel of)."""
    if len(input_shape) != 3:
        raise ValueError(f"{model} takes images: input_shape must be (C, H, W); "
                         f"got {tuple(input_shape)}")
    channels, height, width = input_shape
    if min(height, width) < min_side:
        raise ValueError(f"{model}: input_shape {tuple(input_shape)} is too small; H and W "
                         f"must be >= {min_side}")
    return channels, height, width


def sequence_length(model: str, input_shape: tuple[int, ...]) -> int:
    """``L`` from ``input_shape = (L,)`` (token ids)."""
    if len(input_shape) != 1:
        raise ValueError(f"{model} takes token sequences: input_shape must be (L,); "
                         f"got {tuple(input_shape)}")
    return input_shape[0]
