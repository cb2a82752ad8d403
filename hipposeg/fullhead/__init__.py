"""Whole-head scans: register to the ICBM152 template, crop both hippocampi, segment, map back.

Public API::

    from hipposeg.fullhead import is_full_head, segment_full_head, extract_boxes, register_to_template
    result = segment_full_head(image, crop_predictor)   # crop_predictor(crop: Image) -> (3, *crop.shape)
    result.labels       # uint8 in the input grid: 1 left anterior, 2 left posterior, 3 right ant., 4 right post.
    result.qc           # registration metric, per-side volume and template-region overlap, "flags"
    result.timings      # seconds per step
    write_result(result, "out.nii.gz")                   # + out_qc.json

Modules: :mod:`.template` (ICBM152 2009a from the nilearn wheel, hippocampus box and QC region in MNI
mm), :mod:`.registration` (SimpleITK affine registration), :mod:`.pipeline` (boxes, crops, mapping back,
QC; the evidence on how Task04 crops face), :mod:`.evaluation` (oracle/template predictors, Dice, moved
copies for tests and benchmarks).
"""

from hipposeg.fullhead.pipeline import (
    LABEL_NAMES,
    FullHeadResult,
    extract_boxes,
    is_full_head,
    segment_full_head,
    write_result,
)
from hipposeg.fullhead.registration import RegistrationResult, register_to_template

__all__ = [
    "LABEL_NAMES",
    "FullHeadResult",
    "RegistrationResult",
    "extract_boxes",
    "is_full_head",
    "register_to_template",
    "segment_full_head",
    "write_result",
]
