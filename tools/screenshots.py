"""Screenshots of the browser app for the README and docs/web.md.

    python tools/screenshots.py [--out docs/img]

Builds the demo (the same data as ``metacrm demo``) in a temporary directory, gives the director
``s.volkov`` a password, serves the app on uvicorn on a free local port, signs in with
Playwright driving Debian's Chromium (/usr/bin/chromium) and saves 1280x800 PNGs of a list, a
card, the kanban and, when the server has it, the funnel report (skipped on 404). Needs the
[web] and [test] extras."""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import uvicorn  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

import metacrm  # noqa: E402
from metacrm.io.demo import build_demo  # noqa: E402
from metacrm.runtime.passwords import set_password  # noqa: E402
from metacrm.web import create_app  # noqa: E402

LOGIN = "s.volkov"
PASSWORD = "screenshots only"
SIZE = {"width": 1280, "height": 800}


def serve(app) -> tuple[uvicorn.Server, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            sys.exit("screenshots: uvicorn did not start in 30 s")
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def shrink(path: Path) -> None:
    """A 128-colour palette, no dithering: a third of the size, the text as sharp (needs Pillow;
    without it the PNG stays as Chromium saved it)."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, "PNG", optimize=True)


def shoot(out: Path, chromium: str) -> list[Path]:
    saved: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        trade = build_demo(Path(tmp) / "demo").databases["trade"]
        with metacrm.connect(trade.model, trade.url) as crm:
            set_password(crm, LOGIN, PASSWORD)
            deal = crm.find("deal", where="stage = 'contract'", order_by="-amount", limit=1)[0]["id"]
            pipeline = crm.model.entities["deal"].default_pipeline.name
            server, url = serve(create_app(crm))
            try:
                with sync_playwright() as p:
                    browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                    page = browser.new_context(viewport=SIZE, locale="ru-RU").new_page()
                    page.goto(url + "/login")
                    page.fill("#login", LOGIN)
                    page.fill("#password", PASSWORD)
                    page.click("form.login button[type=submit]")
                    page.wait_for_url(url + "/")
                    shots = {
                        "list": "/deal?order_by=-amount",
                        "card": f"/deal/{deal}",
                        "board": f"/deal/board?pipeline={pipeline}",
                        "funnel": "/reports/funnel/deal",
                    }
                    for name, path in shots.items():
                        response = page.goto(url + path)
                        if response.status == 404 and name == "funnel":
                            print(f"screenshots: {path} answers 404 on this version, skipped")
                            continue
                        if response.status != 200:
                            sys.exit(f"screenshots: {path} answered {response.status}")
                        target = out / f"web-{name}.png"
                        page.screenshot(path=str(target))
                        shrink(target)
                        saved.append(target)
                    browser.close()
            finally:
                server.should_exit = True
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="where to save the PNGs")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the Chromium executable")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in shoot(args.out, args.chromium):
        print(f"{path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
