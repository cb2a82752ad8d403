"""Screenshot a hipposeg group report in headless Chromium, to see the page as a person will.

Either an existing report::

    python tools/report_screenshot.py --html report.html -o bench/results/group_report.png

or a report built first from a ``hipposeg segment`` output folder (``volumes.json``, with eTIV for whole heads, and
the ``<case>_qc.png`` pictures)::

    hipposeg segment heads/ -o out --full-head
    python tools/report_screenshot.py --segment-out out --command "hipposeg segment heads/ -o out --full-head" \\
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--html", type=Path, help="an existing report to screenshot")
    source.add_argument("--segment-out", type=Path, help="a `hipposeg segment` output folder to build a report from")
    parser.add_argument("--command", default="",
                        help="the command that made the segment output (printed in the report)")
    parser.add_argument("--report", type=Path,
                        help="where to write the built report (default: <segment-out>/group_report.html)")
    parser.add_argument("-o", "--out", type=Path, default=Path("bench/results/group_report.png"))
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)

    html_path = args.html
    if args.segment_out:
        from hipposeg.group_report import load_segment_output, model_version, write_group_report

        rows, pictures = load_segment_output(args.segment_out)
        html_path = args.report or args.segment_out / "group_report.html"
        write_group_report(rows, html_path, command=args.command or "(not given)",
                           model_version=model_version(rows), qc_pictures=pictures, overwrite=args.overwrite)
        print(f"report: {html_path} ({html_path.stat().st_size / 1e6:.1f} MB)")
    if args.out.exists() and not args.overwrite:
        print(f"{args.out}: exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    shot = screenshot(html_path, args.out)
    print(f"screenshot: {shot} ({shot.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
