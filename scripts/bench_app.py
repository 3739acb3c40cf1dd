"""How fast the app pseudo-labels the bundled demo (Streamlit's AppTest, no browser), median of
fresh processes like `python -m mssl_core bench`. Run: `python scripts/bench_app.py [--repeats 3]`."""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

from mssl_core.benchmarks.bench import in_fresh_process, median_of, peak_rss_mb

REPO = Path(__file__).resolve().parents[1]


def app_demo_run() -> dict:
    """The bundled demo in the app (Streamlit's AppTest, no browser): seconds from pressing
    "Pseudo-label" to the rendered results, first with nothing cached, then again."""
    from streamlit.testing.v1 import AppTest

    logging.getLogger("streamlit").setLevel(logging.ERROR)  # "no ScriptRunContext": bare mode

    from mssl_core.project import store

    app_file = str(REPO / "app.py")
    with tempfile.TemporaryDirectory() as data:
        os.environ["MSSL_DATA_DIR"] = data
        store.open_project("demo").close()
        app = AppTest.from_file(app_file, default_timeout=600)
        app.session_state["project"] = "demo"
        app.run()
        app.switch_page("views/upload.py").run()
        next(b for b in app.button if b.label.startswith("Load demo data")).click().run()
        app.switch_page("views/pseudo_label.py").run()
        seconds = []
        for _ in range(2):
            started = time.perf_counter()
            next(b for b in app.button if b.label == "Pseudo-label").click().run()
            seconds.append(time.perf_counter() - started)
            if app.exception or not app.success:
                raise RuntimeError(f"the demo did not pseudo-label: {app.exception or 'no result shown'}")
        message = app.success[0].value
    return {"cold_s": seconds[0], "warm_s": seconds[1], "message": message, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    demo = median_of([in_fresh_process(app_demo_run) for _ in range(args.repeats)])
    print(
        f"The app on the bundled demo (25 labeled, 300 unlabeled), from pressing Pseudo-label to results,"
        f" median of {args.repeats}\nnothing cached: {demo['cold_s']:.2f} s; again (embeddings cached):"
        f" {demo['warm_s']:.2f} s; peak RSS {demo['peak_rss_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()
