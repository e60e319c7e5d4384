"""Open notebooks in a real JupyterLab (headless Chromium), run every cell, and report errors and warnings.

    python scripts/check_jupyterlab.py [NOTEBOOK ...] --out DIR     (default: 01 and 04 of notebooks/)

Needs `pip install playwright` (in any Python) and a Chromium (`apt-get install chromium`; --chromium PATH).
JupyterLab is started from this checkout's .venv on a free port with a temporary root folder holding copies of the
notebooks (the committed ones are never saved over). For each notebook: a screenshot after "Run All" finished,
the number of error outputs and of stderr outputs (warnings), and the kernel JupyterLab picked. Exit 1 when a
notebook shows an error or a warning.
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", default=["01_feature_extraction.ipynb", "04_evaluate.ipynb"])
    parser.add_argument("--out", default="/tmp/jupyterlab_check")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per notebook")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="jlab-"))
    for name in args.notebooks:
        shutil.copy(ROOT / "notebooks" / name, work / name)
    port, token = free_port(), "check"
    server = subprocess.Popen([str(ROOT / ".venv" / "bin" / "jupyter"), "lab", "--no-browser", f"--port={port}",
                               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}", "--allow-root"],
                              stdout=open(out / "jupyterlab.log", "w"), stderr=subprocess.STDOUT, cwd=work)
    results = {}
    try:
        for _ in range(120):  # until the server answers
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            for name in args.notebooks:
                page = browser.new_page(viewport={"width": 1500, "height": 1100})
                page.goto(f"http://127.0.0.1:{port}/lab/tree/{name}?token={token}")
                page.wait_for_selector(".jp-Notebook", timeout=120_000)
                page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
                page.keyboard.press("Escape")
                page.locator(".jp-Notebook").first.click()
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
                start = time.time()
                time.sleep(5)
                while time.time() - start < args.timeout:  # until no code cell is queued, running or never run
                    prompts = page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
                    if prompts and not any(("*" in p) or p.strip() in ("[ ]:", "") for p in prompts):
                        break
                    time.sleep(3)
                seconds = time.time() - start
                kernel = page.locator(".jp-Toolbar-kernelName").first.inner_text()
                news = page.locator(".jp-Notification-Toast button", has_text="No")
                if news.count():
                    news.first.click()
                errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count()
                tracebacks = page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']").count()
                images = page.locator(".jp-RenderedImage img").count()
                page.keyboard.press("Control+s")
                time.sleep(2)
                page.screenshot(path=str(out / f"{Path(name).stem}.png"), full_page=False)
                saved = json.loads((work / name).read_text())
                results[name] = {"kernel_shown": kernel, "seconds": round(seconds, 1), "stderr_outputs": errors,
                                 "errors": tracebacks, "images": images,
                                 "kernelspec_after_save": saved["metadata"].get("kernelspec")}
                shutil.copy(work / name, out / name)
                print(name, json.dumps(results[name]), flush=True)
                page.close()
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return 1 if any(r["errors"] or r["stderr_outputs"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
