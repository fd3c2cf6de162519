"""Fully convolutional networks: FC -> CONV conversion, score maps, segmentation.

- :mod:`~convnet.fcn.convert`: :func:`to_fully_convolutional` (or
  ``net.to_fully_convolutional()``).
- :mod:`~convnet.fcn.maps`: :func:`score_map` (one pass over a larger image), :func:`crop_scores`
  (the crop-by-crop reference), :func:`total_stride`, :func:`sizes_that_fit`,
  :func:`check_input_size`, :func:`interior_units`.
- :mod:`~convnet.fcn.explain`: :func:`conversion_text` (the conversion step by step, the map's
  receptive field, the zero-padding caveat).
- :mod:`~convnet.fcn.segment`: the encoder-decoder for segmentation, :func:`mean_iou`, masks.
"""

from convnet.fcn.convert import conversion_plan, scores_from_map, to_fully_convolutional
from convnet.fcn.explain import conversion_text, padding_caveat
from convnet.fcn.maps import (
    check_input_size,
    crop_scores,
    interior_units,
    map_receptive_field,
    score_map,
    sizes_that_fit,
    total_stride,
)

__all__ = [
    "check_input_size",
    "conversion_plan",
    "conversion_text",
    "crop_scores",
    "interior_units",
    "map_receptive_field",
    "padding_caveat",
    "score_map",
    "scores_from_map",
    "sizes_that_fit",
    "to_fully_convolutional",
    "total_stride",
]
