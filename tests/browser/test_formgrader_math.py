"""Formgrader's submission page typesets LaTeX in Chromium with no network.

The page is what formgrader renders for a submission (tests/test_formgrader_mathjax:
the exporter formgrader builds from nbgrader_config.py), answered at a
formgrader address of the course's JupyterLab (same origin, as formgrader
serves it); everything it loads next, MathJax included, comes from that server
(jupyter-server-mathjax). Chromium has the network cut off except for loopback,
so a CDN script would fail.
Screenshot: artifacts/browser/formgrader_math.png."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_formgrader_mathjax import formgrade_page

JS_TYPESET = """
() => {
  const jax = document.querySelectorAll('script[type^="math/tex"]');
  return {n: jax.length, mathjax: typeof window.MathJax,
          raw: document.body.innerText.includes('\\\\nabla_x'),
          error: document.body.innerText.includes('Math Processing Error')};
}
"""


def test_formgrader_typesets_math_offline(lab, browser, artifacts):
    html = formgrade_page("")
    address = "formgrader/submissions/math-check/"
    page = browser.new_page()
    blocked, failed = [], []

    def only_loopback(route):
        url = route.request.url
        if url.split("?")[0].endswith(address):
            route.fulfill(status=200, content_type="text/html", body=html)
        elif url.startswith("http://127.0.0.1"):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    page.route("**/*", only_loopback)
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.on("response", lambda r: r.status >= 400 and failed.append(r.url))
    try:
        page.goto(lab.url(address))
        page.wait_for_function(
            "() => window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0"
            " && document.querySelectorAll('.MathJax, .MathJax_Display').length >= 2",
            timeout=60_000,
        )
        state = page.evaluate(JS_TYPESET)
        page.screenshot(path=str(artifacts / "formgrader_math.png"))
    finally:
        page.close()
    assert state["mathjax"] == "object"
    assert state["n"] == 2  # the inline and the display formula, typeset
    assert not state["raw"], "the LaTeX source is still shown as text"
    assert not state["error"], "MathJax could not typeset a formula"
    assert blocked == [], f"the page asked the network for {blocked}"
    assert [u for u in failed if "mathjax" in u.lower()] == [], failed
