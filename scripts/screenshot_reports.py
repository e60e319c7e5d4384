"""Screenshot every executed HTML report (reports/executed/*.html) in headless Chromium, full page, to look at them
the way a reader's browser shows them (issue 28: every HTML report opened, not only its PNGs).

    python scripts/screenshot_reports.py [--reports reports] [--out /tmp/report_shots] [--chromium /usr/bin/chromium]

Needs `pip install playwright` (in any Python) and a Chromium (`apt-get install chromium`). Writes one PNG per report
(<name>.png, the page's top --height pixels; --height 0: the whole page) and prints each page's height and the
texts a reader would trip over: Python tracebacks, warnings printed to stderr, 'nan' cells.
"""
from __future__ import annotations

import argparse
from pathlib import Path

#: texts that should never reach a committed report
PROBLEMS = ("Traceback (most recent call last)", "Warning:", "UserWarning", "FutureWarning", ">nan<")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", default="reports", help="reports folder (default: reports)")
    parser.add_argument("--out", default="/tmp/report_shots", help="folder for the screenshots")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable")
    parser.add_argument("--height", type=int, default=6000, help="pixels of each page to keep (0: all)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    pages = sorted(Path(args.reports, "executed").glob("*.html"))
    if not pages:
        raise SystemExit(f"no HTML reports under {Path(args.reports, 'executed')}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        for html in pages:
            page.goto(html.resolve().as_uri())
            page.wait_for_load_state("load")
            height = page.evaluate("document.body.scrollHeight")
            clip = {"x": 0, "y": 0, "width": 1400, "height": min(height, args.height)} if args.height else None
            target = out / f"{html.stem}.png"
            page.screenshot(path=str(target), full_page=True, clip=clip)
            text = html.read_text(errors="replace")
            found = [problem for problem in PROBLEMS if problem in text]
            print(f"{html.name}: {height} px -> {target}" + (f"; contains {found}" if found else ""))
        browser.close()


if __name__ == "__main__":
    main()
