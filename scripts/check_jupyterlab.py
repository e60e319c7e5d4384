"""Open notebooks in a real JupyterLab (headless Chromium), run every cell, and report errors and warnings.

    python scripts/check_jupyterlab.py [NOTEBOOK ...] --out DIR     (default: 01 and 04 of notebooks/)

Needs `pip install playwright` (in any Python) and a Chromium (`apt-get install chromium`; --chromium PATH).
JupyterLab is started from this checkout's .venv on a free port with a temporary root folder holding copies of the
notebooks (the committed ones are never saved over). For each notebook: a screenshot after "Run All" finished,
the number of cells run, of error outputs and of stderr outputs (warnings), read from the notebook JupyterLab
saved, and the kernel it picked. Exit 1 when a cell did not run or a notebook shows an error or a warning.
"""
from __future__ import annotations

import argparse
import json
import os
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
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "mvtec_ad"),
                        help="$PATCHCORE_DATA_ROOT of the kernels (a folder holding the default category)")
    args = parser.parse_args()
    from playwright.sync_api import TimeoutError as PlaywrightTimeout, sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="jlab-"))
    for name in args.notebooks:
        shutil.copy(ROOT / "notebooks" / name, work / name)
    port, token = free_port(), "check"
    env = dict(os.environ)
    if args.data_root:
        env["PATCHCORE_DATA_ROOT"] = args.data_root  # where the notebooks' default category is found offline
    server = subprocess.Popen([str(ROOT / ".venv" / "bin" / "jupyter"), "lab", "--no-browser", f"--port={port}",
                               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}", "--allow-root",
                               "--LabApp.expose_app_in_browser=True"],  # window.jupyterapp: run its commands
                              stdout=open(out / "jupyterlab.log", "w"), stderr=subprocess.STDOUT, cwd=work, env=env)
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
                # "Run All Cells" as the Run menu does it, through the app's command (a menu click can land on a
                # notification toast instead)
                ready = ("window.jupyterapp && window.jupyterapp.commands.isEnabled('notebook:run-all-cells') && "
                         "window.jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'")
                page.wait_for_function(ready, timeout=120_000)
                # prompts of this notebook's panel only: JupyterLab restores the tabs of the notebooks checked
                # before, whose [n] prompts would read as "started"
                started = "[...window.jupyterapp.shell.currentWidget.node.querySelectorAll(" \
                          "'.jp-CodeCell .jp-InputPrompt')].some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))"
                for _ in range(3):  # a command sent while the kernel connects can be dropped: send it again
                    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
                    try:
                        page.wait_for_function(started, timeout=20_000)
                        break
                    except PlaywrightTimeout:  # nothing started yet: send the command again
                        continue
                start = time.time()
                time.sleep(5)
                idle_since = None
                while time.time() - start < args.timeout:  # until the kernel has been idle for 15 s
                    status = page.locator(".jp-Notebook-ExecutionIndicator").first.get_attribute("data-status")
                    if status == "idle":
                        idle_since = idle_since or time.time()
                        if time.time() - idle_since > 15:
                            break
                    else:
                        idle_since = None
                    time.sleep(2)
                seconds = time.time() - start
                kernel = page.locator(".jp-Toolbar-kernelName").first.inner_text()
                news = page.locator(".jp-Notification-Toast button", has_text="No")
                if news.count():
                    news.first.click()
                page.keyboard.press("Control+s")
                time.sleep(3)
                page.screenshot(path=str(out / f"{Path(name).stem}.png"), full_page=False)
                # what ran and what it printed, from the saved notebook (JupyterLab renders only visible cells)
                saved = json.loads((work / name).read_text())
                code = [c for c in saved["cells"] if c["cell_type"] == "code"]
                outputs = [o for c in code for o in c.get("outputs", [])]
                results[name] = {
                    "kernel_shown": kernel, "seconds": round(seconds, 1), "code_cells": len(code),
                    "cells_run": sum(c.get("execution_count") is not None for c in code),
                    "errors": sum(o.get("output_type") == "error" for o in outputs),
                    "stderr_outputs": sum(o.get("output_type") == "stream" and o.get("name") == "stderr"
                                          for o in outputs),
                    "stderr_text": [("".join(o.get("text", "")))[:300] for o in outputs
                                    if o.get("output_type") == "stream" and o.get("name") == "stderr"][:5],
                    "images": sum("image/png" in o.get("data", {}) for o in outputs),
                    "kernelspec_after_save": saved["metadata"].get("kernelspec")}
                shutil.copy(work / name, out / name)
                print(name, json.dumps(results[name]), flush=True)
                page.close()
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return 1 if any(r["errors"] or r["stderr_outputs"] or r["cells_run"] < r["code_cells"]
                    for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
