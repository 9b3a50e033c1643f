"""Screenshots of a built site for the README: one per page kind, in headless Chromium.

    python docs/screenshots.py _site [docs/img/screens]

Serves the site on 127.0.0.1 (atlas serve's server) and drives Debian's Chromium with
Playwright; it never downloads a browser.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

from atlas.site.serve import make_server

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGES = {
    "home": "index.html",
    "model": "models/mobilenet/index.html",
    "layer": "models/mobilenet/layers/conv_pw_11/index.html",
    "unit": "models/mobilenet/layers/conv_preds/units/250.html",  # it has the unit views
    "image": "models/mobilenet/images/pug_112.html",
    "image-layers": "models/mobilenet/images/pug_112.html#conv_pw_11",
    "predictions": "models/mobilenet/predictions.html",
    "accuracy": "models/mobilenet/accuracy.html",
    "atlas": "models/mobilenet-pets/atlas/mobilenet_backbone_conv_pw_7-50b3352e.html",
}


def main() -> None:
    site = Path(sys.argv[1])
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("docs/img/screens")
    target.mkdir(parents=True, exist_ok=True)
    server = make_server(site, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        for kind, path in PAGES.items():
            page.goto(base + path, wait_until="load")
            page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
            page.wait_for_load_state("networkidle")
            anchor = path.partition("#")[2]
            page.evaluate(
                "a => { const e = a && document.querySelector(`[data-name='${a}']`);"
                " if (e) { e.scrollIntoView(); } else { window.scrollTo(0, 0); } }",
                anchor,
            )
            page.screenshot(path=str(target / f"{kind}.png"))
            print(f"{kind}: {target / f'{kind}.png'}")
        browser.close()
    server.shutdown()


if __name__ == "__main__":
    main()
