"""Longitudinal mode: two or more whole-head scans of one subject -> per-side hippocampal volume change and rate.

Public API::

    from hipposeg.longitudinal import run_longitudinal
    result = run_longitudinal(["t0.nii.gz", "t1.nii.gz"], "out", load_segmenter(), times=[0.0, 1.0])
    result.rows      # per scan: soft volumes per side, change vs baseline (%), rates (% per year), QC flags

Modules (one concern each): :mod:`.alignment` (rigid, inverse-consistent within-subject alignment into a halfway
space), :mod:`.pipeline` (the run: crops defined once in that space, soft volumes, changes, rates, outputs),
:mod:`.report` (the table and the QC picture).
"""

from hipposeg.longitudinal.pipeline import LongitudinalResult, log_rate, parse_times, run_longitudinal

__all__ = ["LongitudinalResult", "log_rate", "parse_times", "run_longitudinal"]
