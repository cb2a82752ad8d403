"""When each scan was acquired, from its own files: the times of ``hipposeg longitudinal`` when ``--times`` is not given.

* A DICOM series: the first file's AcquisitionDate + AcquisitionTime (0008,0022 / 0008,0032), else SeriesDate +
  SeriesTime (0008,0021 / 0008,0031), else StudyDate + StudyTime (0008,0020 / 0008,0030); the time of day comes
  from the most specific level with a time and the same date (midnight when there is none).
* A NIfTI file: NIfTI-1/2 headers hold no date, so its sidecar JSON (same name, ``.json``; what dcm2niix and BIDS
  write): ``AcquisitionDateTime``, else ``AcquisitionDate`` (+ ``AcquisitionTime``).
* A BIDS dataset (:mod:`hipposeg.longitudinal.bids`): ``sessions.tsv`` / ``scans.tsv`` ``acq_time``.

Text times (sidecars, BIDS) are read by one parser, :func:`parse_acquisition_time`: ISO 8601 with or without a time
of day, fractional seconds and a UTC offset or ``Z``. A time with an offset is converted to UTC; every time is
returned without tzinfo, so times with and without an offset can always be compared (a time without one is taken
as it is: at most the offset's hours off, nothing at the scale of years).

:func:`years_since_first` turns times into years since the earliest (365.25-day years); :func:`acquisition_times`
gives them when every scan has a date, else None (a rate needs them all; the changes are then against the first
scan given).
"""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from hipposeg.data.readers import Image

#: (date tag, time tag) pairs, most specific first
DICOM_DATE_TIME_TAGS = (("0008|0022", "0008|0032"), ("0008|0021", "0008|0031"), ("0008|0020", "0008|0030"))
YEAR_DAYS = 365.25
#: ISO 8601 date, optional time of day (minutes, seconds, any fraction of a second), optional Z or +-hh[:mm]
ISO_DATE_TIME = re.compile(
    r"(?P<year>\d{4})-?(?P<month>\d{2})-?(?P<day>\d{2})"
    r"(?:[T ](?P<hour>\d{2})(?::?(?P<minute>\d{2})(?::?(?P<second>\d{2})(?:[.,](?P<fraction>\d+))?)?)?)?"
    r"\s*(?P<zone>Z|[+-]\d{2}(?::?\d{2})?)?", re.IGNORECASE)


def parse_acquisition_time(text) -> datetime.datetime | None:
    """An ISO 8601 date or date and time (BIDS ``acq_time``, a sidecar's ``AcquisitionDateTime``):
    ``2020-01-01``, ``2020-01-01T10:00``, ``2020-01-01T10:00:00.123456``, with ``Z`` or an offset
    (``+01:00``, ``-0500``), also the basic form ``20200101T100000``. A time with an offset or ``Z`` is converted
    to UTC; the result never has tzinfo (naive), so any two results compare. None for an empty cell, ``n/a``, or
    text that is not such a time."""
    if not isinstance(text, str):
        return None
    match = ISO_DATE_TIME.fullmatch(text.strip())
    if match is None:
        return None
    parts = {key: int(value) for key, value in match.groupdict().items()
             if value is not None and key not in ("fraction", "zone")}
    fraction = match["fraction"] or ""
    try:
        stamp = datetime.datetime(parts["year"], parts["month"], parts["day"], parts.get("hour", 0),
                                  parts.get("minute", 0), parts.get("second", 0), int(fraction[:6].ljust(6, "0")))
    except ValueError:  # month 13, hour 25, ...
        return None
    zone = (match["zone"] or "").upper()
    if zone and zone != "Z":
        digits = zone[1:].replace(":", "")
        offset = datetime.timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        stamp -= offset if zone[0] == "+" else -offset
    return stamp


def years_since_first(stamps: Sequence[datetime.datetime]) -> list[float]:
    """Years (of 365.25 days) since the earliest of ``stamps``, one per stamp (naive datetimes, as
    :func:`parse_acquisition_time` gives)."""
    first = min(stamps)
    return [(stamp - first).total_seconds() / (YEAR_DAYS * 86400) for stamp in stamps]


def _dicom_stamp(date: str, time: str | None) -> datetime.datetime | None:
    """DICOM DA (YYYYMMDD) + TM (HHMMSS.frac, any prefix of it) -> datetime; None when the date is not one."""
    try:
        day = datetime.datetime.strptime(date.strip()[:8], "%Y%m%d")
    except ValueError:
        return None
    digits = (time or "").strip().split(".")[0]
    if len(digits) >= 2 and digits.isdigit():
        parts = [int(digits[k:k + 2]) for k in range(0, min(len(digits), 6), 2)] + [0, 0]
        try:
            return day.replace(hour=parts[0], minute=parts[1], second=parts[2])
        except ValueError:
            return day
    return day


def dicom_acquisition_time(image: Image) -> datetime.datetime | None:
    """The acquisition date and time of a DICOM series read by :func:`hipposeg.data.readers.read_image`."""
    import SimpleITK as sitk

    from hipposeg.data.readers import list_dicom_series

    series = [s for s in list_dicom_series(image.path) if s[0] == image.meta.get("series_uid")]
    if not series or not series[0][2]:
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(series[0][2][0])
    reader.ReadImageInformation()

    def tag(key):
        return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""

    levels = [(tag(d), tag(t)) for d, t in DICOM_DATE_TIME_TAGS]
    date = next((d for d, _ in levels if d), None)
    if date is None:
        return None
    # the time of day from the most specific level of that same date (a missing AcquisitionTime is common)
    time = next((t for d, t in levels if t and (d == date or not d)), None)
    return _dicom_stamp(date, time)


def sidecar_path(path: str | Path) -> Path:
    """``scan.nii.gz`` / ``scan.nii`` -> ``scan.json``."""
    path = Path(path)
    for suffix in (".nii.gz", ".nii"):
        if path.name.endswith(suffix):
            return path.with_name(path.name[: -len(suffix)] + ".json")
    return path.with_suffix(".json")


def sidecar_acquisition_time(path: str | Path) -> datetime.datetime | None:
    """``AcquisitionDateTime`` (ISO 8601), else ``AcquisitionDate`` (+ ``AcquisitionTime``) of the scan's sidecar."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return None
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    text = meta.get("AcquisitionDateTime")
    if not text and meta.get("AcquisitionDate"):
        text = f"{meta['AcquisitionDate']}T{meta.get('AcquisitionTime') or '00:00:00'}"
    return parse_acquisition_time(text)


def acquisition_time(image: Image) -> datetime.datetime | None:
    """The scan's acquisition date and time from its DICOM header or NIfTI sidecar (see the module text)."""
    if image.source == "dicom":
        return dicom_acquisition_time(image)
    return sidecar_acquisition_time(image.path) if image.path else None


def acquisition_times(images: Sequence[Image]) -> list[float] | None:
    """Years since the earliest scan, one per image, or None when any scan has no acquisition date."""
    stamps = [acquisition_time(image) for image in images]
    if any(stamp is None for stamp in stamps):
        return None
    return years_since_first(stamps)
