"""QC flags: the codes of the ``qc_flags`` column and what each one means, in one table (:data:`QC_FLAGS`).

A volume row's ``qc_flags`` (``volumes.csv``, ``volumes.json``, the BIDS ``_volumes.tsv``) is a ";"-joined list of
codes from :data:`QC_FLAGS`, empty when there is nothing to look at; ``qc_ok`` is false when there is any. The
checks live beside their data — :func:`hipposeg.volumes.volume_row` (every row: mask, volume, voxel size),
:func:`hipposeg.fullhead.pipeline.quality_control` (whole heads: registration, template region, left/right) and
:func:`hipposeg.fullhead.icv.icv_flags` (whole heads: intracranial volume), :func:`hipposeg.longitudinal.alignment.
align_scans` and :func:`hipposeg.longitudinal.pipeline.methods_disagree_flags` (longitudinal: the within-subject
alignment, the two change measures) — and their thresholds are the constants
of this module, so that each meaning below quotes the number its check uses. The one exception is
``low_confidence``, whose threshold belongs to the stored confidence mapping that made the prediction (one per
feature set, :mod:`hipposeg.confidence`; :func:`hipposeg.segment.confidence_qc` applies it).

:func:`help_text` is the table as ``hipposeg segment --help`` prints it, :func:`markdown_table` as the docs quote it.
Plain Python and one small JSON file: importing this module keeps ``--help`` fast.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

__all__ = ["QC_FLAGS", "VOLUME_RANGES_FILE", "describe", "help_text", "markdown_table", "sided"]

#: The stored reference volume ranges (one hippocampus, mm3), rebuilt from the training labels; the one
#: volume-plausibility rule of every row (:func:`hipposeg.volumes.reference_volume_ranges`).
VOLUME_RANGES_FILE = Path(__file__).resolve().parent / "resources" / "volume_ranges.json"
REFERENCE_DATASET = "msd_hippocampus"

# ------------------------------------------------------------------------------------------------ thresholds

#: The longest voxel side (mm) that is not flagged ``thick_slices`` (2 mm slices, with rounding in headers).
THICK_SLICE_LIMIT_MM = 2.05
#: Mattes mutual information at 2 mm after the affine stage: good fits -0.29..-0.40, failed ones about -0.05..-0.1.
METRIC_FLAG_ABOVE = -0.15
#: Dice of a side's mask with the template hippocampus region (an ellipsoid, which alone reaches 0.3-0.45 with
#: true hippocampi).
REGION_DICE_FLAG_BELOW = 0.15
#: A side's mask should lie near the template region: at least this fraction within REGION_MARGIN_MM of it.
NEAR_REGION_FLAG_BELOW = 0.6
REGION_MARGIN_MM = 5.0
#: Left / right hippocampus volume ratio outside this range is flagged.
LR_RATIO_RANGE = (0.6, 1.0 / 0.6)
#: eTIV outside the adult range (Matsumae 1996: women's mean - 3.5 SD .. men's mean + 3.5 SD; hipposeg.fullhead.icv).
ADULT_ETIV_RANGE_MM3 = (900_000.0, 1_830_000.0)
#: |intracranial mask / eTIV - 1| above this is flagged (the three test heads: 0.99-1.07).
AGREEMENT_TOLERANCE = 0.15
#: Longitudinal: the two rigid registrations of a scan pair (each scan as fixed image) should be inverses; the
#: largest displacement (mm) of F_ba F_ab over a 160 mm cube around the brain (hipposeg.longitudinal.alignment).
ALIGNMENT_INCONSISTENCY_ABOVE_MM = 1.5
#: Longitudinal: Mattes mutual information of a scan pair after rigid alignment (2 mm, 32 bins): moved copies of one
#: head -1.6 to -1.7; a registration stopped 8-30 mm away -0.04 to -0.24; scans of two different heads (2 mm copies of
#: colin27, CANDI 030, bert, pairwise) -0.10 to -0.26.
ALIGNMENT_METRIC_ABOVE = -0.5
#: Longitudinal: a scan's change by Jacobian integration and by soft volumes (both vs the baseline, percentage
#: points) further apart than this (bench/longitudinal.py, 30 side-pairs of noisy moved and atrophied copies: 28
#: within 1.8; 2.06 and 2.54, the latter flagged: CANDI 030 right, where the soft volume read -5.1 % for a true -2 %).
METHODS_DISAGREE_ABOVE_PP = 2.5

SIDES = ("left", "right")

# low_confidence has no constant here: each stored confidence mapping (hipposeg/resources/confidence_model.json, one
# per feature set: with the 3D partner, the core alone) carries its own threshold, low_confidence_below, chosen by
# bench/robustness.py --fit on the cross-validated predictions over fold 0's clean and corrupted crops (the evidence
# is in the file); the prediction carries the threshold of the mapping that made it (hipposeg.confidence.
# confidence_prediction) and hipposeg.segment.confidence_qc applies it.


def sided(code: str, side: str) -> str:
    """The code of a per-side flag: ``sided("hippocampus_missing", "left") == "hippocampus_missing_left"``."""
    return f"{code}_{side}"


def _volume_range_text() -> str:
    stored = json.loads(VOLUME_RANGES_FILE.read_text())["datasets"][REFERENCE_DATASET]
    return (f"{float(stored['low']):.0f}-{float(stored['high']):.0f} mm3 ({stored['low_factor']:g} x the smallest to "
            f"{stored['high_factor']:g} x the largest of the {stored['n_cases']} Task04 training labels)")


_PER_SIDE = {
    "hippocampus_missing": "whole head: no hippocampus found on that side",
    "off_template_region": "whole head: the mask of that side overlaps the template hippocampus region (mapped "
                           f"through the registration) with a Dice below {REGION_DICE_FLAG_BELOW:g}",
    "far_from_template_region": f"whole head: less than {NEAR_REGION_FLAG_BELOW:.0%} of that side's mask lies within "
                                f"{REGION_MARGIN_MM:g} mm of the template hippocampus region",
}

#: Every flag code hipposeg writes and what it means.
QC_FLAGS: dict[str, str] = {
    "empty_mask": "no foreground voxel at all",
    "volume_out_of_range": "the hippocampus volume (each side when the labels have sides, else the total) is outside "
                           f"the reference range of one hippocampus, {_volume_range_text()}",
    "touches_border": "foreground on a face of the volume: the structure may be cut off by the field of view",
    "unknown_label": "the label map holds values that are not in the label names",
    "thick_slices": f"voxels longer than {THICK_SLICE_LIMIT_MM:g} mm along an axis: thicker than the slices the model "
                    "was trained and measured on (1.3-2.5 mm simulated in training; bench/thick_slices.py scores 1.6 "
                    "and 2.0 mm)",
    "registration_poor_fit": "whole head: the affine registration to the template fits poorly (Mattes mutual "
                             f"information above {METRIC_FLAG_ABOVE:g}; good fits -0.29 to -0.40)",
    **{sided(code, side): text.replace("that side", f"the {side} side")
       for code, text in _PER_SIDE.items() for side in SIDES},
    "low_confidence": "the predicted Dice (predicted_dice: agreement of the three slicing axes, entropy of the "
                      "probabilities, and with --model ensemble of the 2.5D core with the 3D partner; "
                      "hipposeg.confidence) is below the threshold low_confidence_below of the mapping in "
                      "hipposeg/resources/confidence_model.json that predicted it (one per feature set: the core "
                      "alone, with the partner; fitted on corrupted "
                      "fold-0 crops; bench/README.md, 'Robustness and confidence'): check the mask",
    **{sided("low_confidence", side): f"whole head: the predicted Dice of the {side} side is below the "
                                      "low_confidence threshold of its mapping" for side in SIDES},
    "left_right_ratio": "whole head: the left / right hippocampus volume ratio is outside "
                        f"{LR_RATIO_RANGE[0]:.2f}-{LR_RATIO_RANGE[1]:.2f}",
    "registration_mirrored": "whole head: the registration mirrors the head (negative determinant); eTIV is "
                             "meaningless",
    "etiv_out_of_range": f"whole head: eTIV outside the adult range {ADULT_ETIV_RANGE_MM3[0] / 1000:.0f}-"
                         f"{ADULT_ETIV_RANGE_MM3[1] / 1000:.0f} cm3 (child, unusual head, or failed registration)",
    "alignment_inconsistent": "longitudinal: the two rigid registrations of a scan pair (each scan as fixed image) "
                              f"disagree by more than {ALIGNMENT_INCONSISTENCY_ABOVE_MM:g} mm somewhere in the brain: "
                              "the within-subject alignment may have failed",
    "alignment_poor_fit": "longitudinal: after rigid alignment the scan pair's mutual information is above "
                          f"{ALIGNMENT_METRIC_ABOVE:g} (moved copies of one head: -1.6 to -1.7; two different heads: "
                          "-0.1 to -0.3): another head, another contrast, or a failed alignment",
    **{sided("longitudinal_methods_disagree", side): f"longitudinal: the {side} change by Jacobian integration and by "
       f"soft volumes differ by more than {METHODS_DISAGREE_ABOVE_PP:g} percentage points: check the QC picture"
       for side in SIDES},
    "icv_estimates_disagree": "whole head: the intracranial mask and eTIV differ by more than "
                              f"{AGREEMENT_TOLERANCE:.0%}: the registration's scale is suspect, check the QC picture",
}


def describe(code: str) -> str | None:
    """What ``code`` means (None for a string that is not a flag code)."""
    return QC_FLAGS.get(code)


def help_text(width: int = 100) -> str:
    """The table as plain text for ``--help`` (an argparse epilog; keep its line breaks with
    ``argparse.RawDescriptionHelpFormatter``)."""
    column = max(len(code) for code in QC_FLAGS) + 2
    lines = ["QC flags (the qc_flags column, ';'-joined; qc_ok is false when there is any):"]
    for code, meaning in QC_FLAGS.items():
        wrapped = textwrap.wrap(meaning, width=max(40, width - column - 2))
        lines.append(f"  {code:<{column}}{wrapped[0]}")
        lines += [" " * (column + 2) + line for line in wrapped[1:]]
    return "\n".join(lines)


def markdown_table() -> str:
    """The table as Markdown (``| flag | meaning |``), for the docs."""
    rows = [f"| `{code}` | {meaning} |" for code, meaning in QC_FLAGS.items()]
    return "\n".join(["| flag | meaning |", "|---|---|", *rows])
