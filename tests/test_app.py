from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def test_home_page_renders():
    app = AppTest.from_file(APP, default_timeout=60).run()
    assert not app.exception
    assert app.title[0].value == "MSSL Label Assist"


def test_model_page_renders():
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("pages/model.py").run()
    assert not app.exception
    assert app.title[0].value == "The model"
