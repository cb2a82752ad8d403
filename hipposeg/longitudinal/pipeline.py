"""``hipposeg longitudinal``: two or more whole-head T1 scans of one subject -> per-side volume change and rate.

Flow of :func:`run_longitudinal`::

    scans --read, check--> images --register_to_template (each), T1 check, eTIV--> per-scan MNI -> scan affine
          --align_scans--> rigid, inverse-consistent halfway space; one MNI -> common affine (alignment.py)
          --segment_full_head with the crops defined once in the common space--> per scan: crop probabilities
            (every time point on the same two boxes, each sampled once from its raw scan) and its mask mapped back
            onto its own grid, as ``hipposeg segment --full-head`` writes it
          --soft volumes--> sum of the probabilities of hippocampus (anterior + posterior) x 1 mm3 per crop voxel,
            over one region shared by every time point (the union of the scans' masks grown by REGION_GROW_VOXELS)
          --changes vs the baseline, rates (log-volume on time, least squares)--> longitudinal.csv / .json, QC picture

Why soft volumes in one common crop: a hard mask counted on each scan's own grid changes with the grid (partial
voxels) and with where each scan's crop fell; every time point here is cut from the same box of the same space
(only the scan and its one resampling differ) and its probabilities are summed, so a boundary that moves by a
fraction of a voxel moves the volume by that fraction. The crops, the region and every mean are computed in the
scans' content order, so any input order and any baseline give the same changes: (1 + c12)(1 + c21) = 1.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from hipposeg.data.readers import Image, case_name, check_volume, read_image
from hipposeg.errors import InputError

#: what the change columns measure (deformation.py); the soft-volume change is the cross-check column
CHANGE_METHOD = ("jacobian-integration (symmetric demons, elastic and fluid smoothing, in the halfway-space crops; "
                 "linear intensities, blur matched; soft hippocampus weights)")
REGION_GROW_VOXELS = 3  # the soft-volume region: the union of the time points' masks, grown by 3 mm
TABLE_COLUMNS = ("scan", "time_years", "volume_left_mm3", "volume_right_mm3", "change_left_pct",
                 "change_right_pct", "rate_left_pct_per_year", "rate_left_se_pct_per_year",
                 "rate_right_pct_per_year", "rate_right_se_pct_per_year", "soft_change_left_pct",
                 "soft_change_right_pct", "mask_volume_left_mm3", "mask_volume_right_mm3", "qc_ok", "qc_flags",
                 "input_path")
SIDES = ("left", "right")


@dataclass
class LongitudinalResult:
    rows: list[dict]  # one per scan, ordered by time (baseline first)
    rates: dict  # side -> {"pct_per_year", "se_pct_per_year"} (None when the times are unknown)
    alignment: dict
    change: dict = field(default_factory=dict)  # the method, each pair's Jacobian ratios, the soft volumes
    timings: dict = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def output_paths(out_dir: Path, cases: Sequence[str]) -> dict:
    from hipposeg.data.writers import segmentation_paths

    return {"masks": {case: segmentation_paths(out_dir / f"{case}_seg.nii.gz") for case in cases},
            "csv": out_dir / "longitudinal.csv", "json": out_dir / "longitudinal.json",
            "qc": out_dir / "longitudinal_qc.png"}


def parse_times(text: str | None, n: int) -> list[float] | None:
    """``"0,1.5,3"`` -> [0.0, 1.5, 3.0] (years); one per scan."""
    if text is None:
        return None
    try:
        times = [float(v) for v in text.split(",")]
    except ValueError:
        raise InputError(None, f"--times: {text!r} is not a comma-separated list of numbers (years)") from None
    if len(times) != n or not all(math.isfinite(t) for t in times):
        raise InputError(None, f"--times: {len(times)} time(s) given for {n} scans")
    return times


def log_rate(times: Sequence[float], volumes: Sequence[float]) -> tuple[float | None, float | None]:
    """Annualised change in % per year from the least-squares line of ln(volume) on time, and its standard error
    (delta method; None with two time points)."""
    t = np.asarray(times, dtype=np.float64)
    y = np.log(np.asarray(volumes, dtype=np.float64))
    if len(t) < 2 or np.ptp(t) <= 0 or not np.all(np.isfinite(y)):
        return None, None
    slope, intercept = np.polyfit(t, y, 1)
    rate = 100.0 * math.expm1(slope)
    if len(t) < 3:
        return rate, None
    residual = y - (slope * t + intercept)
    se_slope = math.sqrt(float(residual @ residual) / (len(t) - 2) / float(((t - t.mean()) ** 2).sum()))
    return rate, 100.0 * math.exp(slope) * se_slope


def soft_volumes(probabilities: list[dict], grow: int = REGION_GROW_VOXELS) -> tuple[list[dict], dict]:
    """Per scan and side: the sum of hippocampus probabilities (1 - background) x 1 mm3 over one region per side,
    the union of every scan's mask (argmax, largest component) on the common crop, grown by ``grow`` voxels.
    Returns the volumes and the regions."""
    from hipposeg.inference import keep_largest_component

    regions = {}
    for side in SIDES:
        union = None
        for probs in probabilities:
            mask = keep_largest_component(np.argmax(probs[side], axis=0).astype(np.uint8)) > 0
            union = mask if union is None else union | mask
        regions[side] = ndimage.binary_dilation(union, iterations=grow) if union.any() else union
    volumes = [{side: float((1.0 - probs[side][0])[regions[side]].sum()) for side in SIDES}
               for probs in probabilities]
    return volumes, regions


class _Recorder:
    """A crop predictor that blurs each crop by its side's ``sigma`` (mm) first and remembers the crop (as sampled,
    before that blur) and what it returned, per side (the whole-head path calls it once per side)."""

    def __init__(self, predict, sigma: dict):
        self.predict, self.sigma, self.probabilities, self.crops = predict, sigma, {}, {}

    def __call__(self, crop: Image) -> np.ndarray:
        self.crops[crop.meta["side"]] = np.asarray(crop.array, dtype=np.float32)  # deformation.py matches blur
        sigma = self.sigma[crop.meta["side"]]
        if sigma > 0:
            crop = Image(ndimage.gaussian_filter(crop.array, sigma), crop.affine, path=crop.path, source=crop.source,
                         meta=crop.meta)
        probs = np.asarray(self.predict(crop), dtype=np.float32)
        self.probabilities[crop.meta["side"]] = probs
        return probs


def read_scans(paths: Sequence[str | Path]) -> list[Image]:
    """Read and check every scan (one :class:`InputError` naming the first bad file)."""
    if len(paths) < 2:
        raise InputError(None, f"longitudinal needs two or more scans of one subject, {len(paths)} given")
    return [check_volume(read_image(p)) for p in paths]


def case_names(paths: Sequence[str | Path]) -> list[str]:
    names = []
    for path in paths:
        name = case_name(path)
        if name in names:
            name = f"{Path(path).parent.name}_{name}"
        if name in names:
            raise InputError(path, f"case name {name!r} used twice; outputs would collide")
        names.append(name)
    return names


def run_longitudinal(paths: Sequence[str | Path], out_dir: str | Path, segmenter, *, times: Sequence[float] | None = None,
                     overwrite: bool = False, qc_png: bool = True, masks: bool = True,
                     equalise_blur: bool = True) -> LongitudinalResult:
    """The longitudinal run (see the module text). ``segmenter``: :func:`hipposeg.segmenter.load_segmenter`'s, or a
    function that loads it (called once every input has been read and checked, so a bad input costs no model load).
    Every output is checked before any work (no overwrite without ``overwrite``) and written atomically; ``masks``
    False leaves out the per-scan masks (the BIDS App has written them already)."""
    from hipposeg.data.writers import check_output_folder, check_writable, write_segmentation, write_text
    from hipposeg.fullhead.icv import check_t1_weighted, intracranial_volume
    from hipposeg.fullhead.pipeline import extract_boxes, segment_full_head
    from hipposeg.fullhead.registration import RegistrationResult, register_to_template
    from hipposeg.longitudinal.alignment import align_scans
    from hipposeg.longitudinal.deformation import jacobian_volumes
    from hipposeg.longitudinal.resolution import equalising_sigmas
    from hipposeg.volumes import reference_volume_ranges, volume_row

    t0 = time.perf_counter()
    out_dir = check_output_folder(out_dir)
    names = case_names(paths)
    out = output_paths(out_dir, names)
    targets = [p for pair in out["masks"].values() for p in pair] if masks else []
    targets += [out["csv"], out["json"]]
    targets += [out["qc"]] if qc_png else []
    for target in targets:
        check_writable(target, overwrite)
    if times is not None and len(times) != len(paths):
        raise InputError(None, f"{len(times)} time(s) given for {len(paths)} scans")
    images = read_scans(paths)
    times_source = "given" if times is not None else None
    if times is None:
        from hipposeg.longitudinal.acquisition_times import acquisition_times

        times = acquisition_times(images)  # DICOM header or NIfTI sidecar, when every scan has a date
        times_source = "acquisition dates" if times is not None else None
    if not hasattr(segmenter, "predict_probabilities"):
        segmenter = segmenter()
    t_read = time.perf_counter()

    registrations, icvs = [], []
    for image in images:
        reg = register_to_template(image)
        check_t1_weighted(image, reg)  # a T2/FLAIR/PD image or a label map: one line, nothing written
        registrations.append(reg)
        icvs.append(intracranial_volume(image, reg))
    t_template = time.perf_counter()
    alignment = align_scans(images, [r.matrix_ras for r in registrations], [r.pyramid for r in registrations])
    t_align = time.perf_counter()

    sigmas = {side: [0.0] * len(images) for side in SIDES}
    if equalise_blur:  # every time point as sharp as the blurriest (resolution.py)
        boxes = [extract_boxes(image, alignment.mni_to_scan(i)) for i, image in enumerate(images)]
        sigmas = {side: equalising_sigmas([b[side].array for b in boxes]) for side in SIDES}
    results, probabilities, crops = [], [], []
    for i, image in enumerate(images):
        common = RegistrationResult(transform=None, matrix_ras=alignment.mni_to_scan(i),
                                    metric=registrations[i].metric, seconds=0.0, stages=registrations[i].stages)
        recorder = _Recorder(segmenter.predict_probabilities, {side: sigmas[side][i] for side in SIDES})
        results.append(segment_full_head(image, recorder, registration=common))
        probabilities.append(recorder.probabilities)
        crops.append(recorder.crops)
    t_segment = time.perf_counter()
    soft, regions = soft_volumes(probabilities)
    volumes, jacobian_pairs = jacobian_volumes(crops, probabilities, soft, alignment.order)
    t_change = time.perf_counter()

    order = sorted(range(len(images)), key=lambda i: (times[i], i)) if times is not None else list(range(len(images)))
    base = order[0]
    rates = {}
    for side in SIDES:
        rate, se = log_rate([times[i] for i in order], [volumes[i][side] for i in order]) if times else (None, None)
        rates[side] = {"pct_per_year": rate, "se_pct_per_year": se}
    names_map = {0: "background", **results[0].label_names}
    ranges = reference_volume_ranges()
    rows = []
    for i in order:
        row = volume_row(names[i], str(paths[i]), results[i].labels, images[i].affine, names_map, ranges,
                         extra_flags=[*results[i].qc.get("flags", []), *icvs[i]["flags"]])
        entry = {"scan": names[i], "time_years": None if times is None else float(times[i])}
        for side in SIDES:
            entry[f"volume_{side}_mm3"] = volumes[i][side]
            entry[f"change_{side}_pct"] = _change_pct(volumes[i][side], volumes[base][side])
        for side in SIDES:
            entry[f"rate_{side}_pct_per_year"] = rates[side]["pct_per_year"]
            entry[f"rate_{side}_se_pct_per_year"] = rates[side]["se_pct_per_year"]
        for side in SIDES:
            entry[f"soft_change_{side}_pct"] = _change_pct(soft[i][side], soft[base][side])
        for side in SIDES:
            entry[f"mask_volume_{side}_mm3"] = row[f"volume_{side}_mm3"]
        flags = [f for f in row["qc_flags"].split(";") if f] + alignment.flags[i]
        flags += methods_disagree_flags(entry)
        entry.update({"qc_ok": not flags, "qc_flags": ";".join(flags), "input_path": str(paths[i]),
                      "etiv_mm3": icvs[i]["etiv_mm3"], "registration_metric": registrations[i].metric})
        rows.append(entry)

    align_info = {"reference_scan": names[alignment.reference],
                  "pairs": [{"scans": [names[a] for a in p["scans"]], "inconsistency_mm": p["inconsistency_mm"],
                             "metric": p["metric"], "flags": p["flags"]} for p in alignment.pairs],
                  "common_to_scan": {names[i]: alignment.to_scan[i].tolist() for i in range(len(images))},
                  "mni_to_common": alignment.mni_to_common.tolist(),
                  "soft_volume_region_mm3": {side: int(regions[side].sum()) for side in SIDES},
                  "equalising_blur_sigma_mm": {side: {names[i]: sigmas[side][i] for i in order} for side in SIDES}}
    change_info = {"method": CHANGE_METHOD,
                   "pairs": {side: [{"scans": [names[a] for a in p["scans"]], "log_ratio": p["log_ratio"],
                                     "forward_ratio": p["forward"], "backward_ratio": p["backward"]}
                                    for p in jacobian_pairs[side]] for side in SIDES},
                   "soft_volumes_mm3": {names[i]: soft[i] for i in order}}
    files = []
    for i in order if masks else []:
        mask_path, _ = out["masks"][names[i]]
        files += [p for p in write_segmentation(mask_path, results[i].labels, images[i].affine, names_map,
                                                overwrite=overwrite) if p]
    if qc_png:
        from hipposeg.longitudinal.report import save_longitudinal_png

        crops = [results[i].crops for i in order]
        files.append(save_longitudinal_png(out["qc"], crops, [probabilities[i] for i in order], rows,
                                           overwrite=overwrite))
    t_write = time.perf_counter()
    timings = {"read_s": t_read - t0, "template_registration_s": t_template - t_read, "alignment_s": t_align - t_template,
               "segment_s": t_segment - t_align, "change_s": t_change - t_segment, "write_s": t_write - t_change,
               "total_s": t_write - t0}
    from hipposeg.longitudinal.report import table_csv

    summary = {"scans": [r["scan"] for r in rows], "baseline": names[base], "times_source": times_source,
               "rates": rates, "change": change_info,
               "alignment": align_info, "timings": timings, "rows": rows}
    files.append(write_text(out["csv"], table_csv(rows), overwrite=overwrite))
    files.append(write_text(out["json"], json.dumps(_plain(summary), indent=1) + "\n", overwrite=overwrite))
    return LongitudinalResult(rows=rows, rates=rates, alignment=align_info, change=change_info, timings=timings,
                              files=files)


def _change_pct(volume: float, base_volume: float) -> float | None:
    return 100.0 * (volume / base_volume - 1.0) if base_volume > 0 else None


def methods_disagree_flags(entry: dict) -> list[str]:
    """``longitudinal_methods_disagree_<side>`` where the Jacobian change and the soft-volume change of a scan
    differ by more than :data:`hipposeg.qc_flags.METHODS_DISAGREE_ABOVE_PP` percentage points."""
    from hipposeg.qc_flags import METHODS_DISAGREE_ABOVE_PP, sided

    flags = []
    for side in SIDES:
        a, b = entry[f"change_{side}_pct"], entry[f"soft_change_{side}_pct"]
        if a is not None and b is not None and abs(a - b) > METHODS_DISAGREE_ABOVE_PP:
            flags.append(sided("longitudinal_methods_disagree", side))
    return flags


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
