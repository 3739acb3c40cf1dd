import pytest
from streamlit.testing.v1 import AppTest

from mssl_core.engine.data.paths import REPO_ROOT

APP = str(REPO_ROOT / "app.py")


def test_home_page_renders():
    app = AppTest.from_file(APP, default_timeout=60).run()
    assert not app.exception
    assert app.title[0].value == "MSSL Label Assist"


def test_model_page_renders():
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("views/model.py").run()
    assert not app.exception
    assert app.title[0].value == "The model"


def test_with_a_password_every_page_asks_for_it_first(monkeypatch):
    monkeypatch.setenv("MSSL_PASSWORD", "correct horse")
    app = AppTest.from_file(APP, default_timeout=60).run()
    assert [t.value for t in app.title] == ["MSSL Label Assist"] and len(app.text_input) == 1
    with pytest.raises(ValueError, match=r"Known pages: \[.Log in.\]"):  # no other page exists yet
        app.switch_page("views/model.py")
    app.text_input[0].input("wrong")
    app.button[0].click().run()
    assert "Wrong password." in [e.value for e in app.error]
    app.text_input[0].input("correct horse")
    app.button[0].click().run()
    assert not app.exception and app.title[0].value == "MSSL Label Assist" and not app.text_input
    app.switch_page("views/model.py").run()
    assert not app.exception and app.title[0].value == "The model"


def test_password_can_come_from_streamlit_secrets():
    app = AppTest.from_file(APP, default_timeout=60)
    app.secrets["password"] = "s3cret"
    app.run()
    assert len(app.text_input) == 1 and app.text_input[0].label == "Password"


def test_the_network_guard_refuses_and_records_an_outbound_connection(tmp_path, monkeypatch):
    """The guard the privacy tests rely on really catches a connection attempt."""
    import socket

    from network_guard.sitecustomize import install

    log = tmp_path / "network.log"
    install(str(log), monkeypatch.setattr)
    with pytest.raises(ConnectionRefusedError), socket.socket() as s:
        s.connect(("192.0.2.1", 443))  # TEST-NET-1: never routed
    assert "192.0.2.1" in log.read_text()
    with socket.socket() as listener, socket.socket() as client:  # loopback stays allowed
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client.connect(listener.getsockname())


def test_the_model_page_says_what_the_unlabeled_batch_adds(monkeypatch):
    """From the published cross-domain rows: the gain of the batch at one shot, only where the
    labeled images alone leave room; nothing where the rows have no labeled-only figure."""
    from mssl_core.benchmarks import crossdomain

    def setting(domain: str, shots: int, default: float, labeled_only: float | None) -> list[dict]:
        common = {"domain": domain, "role": "test", "kind": "scans", "ways": 2, "shots": shots}
        common |= {"setting": f"2-way {shots}-shot", "episodes": 200, "ci95": 0.01}
        rows = [{**common, "row": name, "accuracy": 0.5} for name in crossdomain.BASELINES]
        rows.append({**common, "row": crossdomain.DEFAULT_ROW, "accuracy": default, "ece": 0.02})
        rows[-1]["accepted_share"] = 0.5
        if labeled_only is not None:
            rows.append({**common, "row": crossdomain.LABELED_ONLY_ROW, "accuracy": labeled_only, "ece": 0.3})
        return rows

    rows = setting("a", 1, 0.80, 0.72) + setting("b", 1, 1.0, 0.995) + setting("c", 1, 0.9, 0.85)
    rows += setting("a", 5, 0.95, None)
    monkeypatch.setattr(crossdomain, "load_results", lambda: rows)
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("views/model.py").run()
    assert not app.exception
    said = [m.value for m in app.markdown if "What the unlabeled batch adds" in m.value]
    assert len(said) == 1 and "labels 5 to 8 more images in every hundred" in said[0]
