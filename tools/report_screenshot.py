"""Screenshot a hipposeg group report in headless Chromium, to see the page as a person will.

Either an existing report::

    python tools/report_screenshot.py --html report.html -o bench/results/group_report.png

or a report built first from a ``hipposeg segment`` output folder (``volumes.json`` and the ``<case>_qc.png``
pictures). With ``--etiv``, each whole-head case's input is registered to the template again and its intracranial
volume computed (:mod:`hipposeg.fullhead.icv`) — a stand-in until ``hipposeg segment --full-head`` writes
``etiv_mm3`` itself::

    hipposeg segment heads/ -o out --full-head
    python tools/report_screenshot.py --segment-out out --etiv --command "hipposeg segment heads/ -o out --full-head" \\
        --report out/group_report.html -o bench/results/group_report.png

Chromium: ``/usr/bin/chromium`` (``apt-get install -y chromium``), run headless, sandbox-less, with no network
services, in a throw-away profile. The screenshot is reduced to a palette PNG so it stays small.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
WINDOW = (1280, 2000)


def screenshot(html_path: Path, png_path: Path, *, window: tuple[int, int] = WINDOW, timeout_s: float = 120.0) -> Path:
    """Render ``html_path`` in headless Chromium and save the first ``window`` pixels as ``png_path``."""
    browser = shutil.which("chromium") or CHROMIUM
    if not Path(browser).exists():
        raise SystemExit(f"{browser}: not found; install it with `apt-get install -y chromium`")
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hipposeg-chromium-") as profile:
        raw = Path(profile) / "shot.png"
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}/user",
               f"--screenshot={raw}", f"--window-size={window[0]},{window[1]}", html_path.resolve().as_uri()]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        if not raw.is_file():
            raise SystemExit(f"chromium made no screenshot (exit {done.returncode}): {done.stderr.strip()[-500:]}")
        _save_small(raw, png_path)
    return png_path


def _save_small(src: Path, dst: Path) -> None:
    """Re-save ``src`` as an adaptive-palette PNG at ``dst`` (a page screenshot drops from ~1 MB to ~200 kB)."""
    from PIL import Image as PILImage

    with PILImage.open(src) as img:
        img.convert("RGB").quantize(colors=128, method=PILImage.Quantize.MEDIANCUT).save(dst, optimize=True)


def rows_with_etiv(rows: list[dict]) -> list[dict]:
    """``rows`` with ``etiv_mm3``, ``icv_mask_mm3``, eTIV fractions and ICV flags added for each whole-head input."""
    from hipposeg.data.readers import read_image
    from hipposeg.fullhead.icv import etiv_columns, intracranial_volume
    from hipposeg.fullhead.pipeline import is_full_head
    from hipposeg.fullhead.registration import register_to_template

    out = []
    for row in rows:
        row = dict(row)
        image = read_image(row["input_path"])
        if is_full_head(image):
            icv = intracranial_volume(image, register_to_template(image))
            row.update(etiv_columns(row, icv))
            flags = [f for f in str(row.get("qc_flags") or "").split(";") if f] + icv["flags"]
            row["qc_flags"] = ";".join(flags)
            row["qc_ok"] = bool(row.get("qc_ok", True)) and not icv["flags"]
            print(f"{row['case']}: eTIV {icv['etiv_mm3'] / 1000:.0f} cm3, mask {icv['icv_mask_mm3'] / 1000:.0f} cm3 "
                  f"(mask/eTIV {icv['icv_mask_to_etiv']:.3f}), flags: {icv['flags'] or 'none'}")
        out.append(row)
    return out


def _model_version(rows: list[dict]) -> str:
    import hipposeg

    models = sorted({str(row.get("model", "")) for row in rows if row.get("model")})
    return f"hipposeg {hipposeg.__version__}" + (f" ({', '.join(models)})" if models else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--html", type=Path, help="an existing report to screenshot")
    source.add_argument("--segment-out", type=Path, help="a `hipposeg segment` output folder to build a report from")
    parser.add_argument("--etiv", action="store_true", help="add eTIV to whole-head rows (registers each input)")
    parser.add_argument("--command", default="",
                        help="the command that made the segment output (printed in the report)")
    parser.add_argument("--report", type=Path,
                        help="where to write the built report (default: <segment-out>/group_report.html)")
    parser.add_argument("-o", "--out", type=Path, default=Path("bench/results/group_report.png"))
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)

    html_path = args.html
    if args.segment_out:
        from hipposeg.group_report import load_segment_output, write_group_report

        rows, pictures = load_segment_output(args.segment_out)
        if args.etiv:
            rows = rows_with_etiv(rows)
        html_path = args.report or args.segment_out / "group_report.html"
        write_group_report(rows, html_path, command=args.command or "(not given)",
                           model_version=_model_version(rows), qc_pictures=pictures, overwrite=args.overwrite)
        print(f"report: {html_path} ({html_path.stat().st_size / 1e6:.1f} MB)")
    if args.out.exists() and not args.overwrite:
        print(f"{args.out}: exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    shot = screenshot(html_path, args.out)
    print(f"screenshot: {shot} ({shot.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
