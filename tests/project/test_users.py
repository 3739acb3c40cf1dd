"""Named users (issue 15, "Also"): passwords kept only as Argon2 hashes in a private file, a
log-in by name that is throttled like the single password, every decision recorded with its
user, and projects that only their members can see or open."""

from __future__ import annotations

import csv
import io
import stat

import pytest
from streamlit.testing.v1 import AppTest

from mssl_core.cli import main
from mssl_core.engine.data.paths import REPO_ROOT
from mssl_core.project import store, users
from mssl_core.project.export import audit_trail_csv

APP = str(REPO_ROOT / "app.py")


@pytest.fixture
def alice_and_bob():
    users.add_user("alice", "alice's secret")
    users.add_user("bob", "bob's secret!")


def test_passwords_are_kept_only_as_hashes_in_a_file_its_user_alone_reads(alice_and_bob):
    text = users.users_file().read_text()
    assert "secret" not in text and text.count("$argon2id$") == 2
    assert stat.S_IMODE(users.users_file().stat().st_mode) == 0o600
    assert users.password_is_right("alice", "alice's secret")
    assert not users.password_is_right("alice", "bob's secret!")
    assert not users.password_is_right("carol", "alice's secret")
    with pytest.raises(ValueError, match="at least 8"):
        users.add_user("carol", "short")
    with pytest.raises(ValueError, match="user name"):
        users.add_user("../carol", "long enough")


def test_users_are_managed_from_the_command_line(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("a new password\n"))
    assert main(["users", "add", "dr.smith", "--password-stdin"]) == 0
    assert main(["users", "list"]) == 0 and capsys.readouterr().out.split() == ["dr.smith"]
    assert users.password_is_right("dr.smith", "a new password")
    assert main(["users", "remove", "nobody"]) == 1 and "no user named" in capsys.readouterr().err
    assert main(["users", "remove", "dr.smith"]) == 0 and users.list_users() == []


def test_a_project_is_seen_and_opened_by_its_members_only(alice_and_bob):
    store.create_project("ward 7", owner="alice").close()
    store.create_project("open ward").close()  # made without named users: everyone's
    assert store.list_projects("alice") == ["open-ward", "ward-7"]
    assert store.list_projects("bob") == ["open-ward"]
    with pytest.raises(FileNotFoundError):
        store.open_project("ward 7", create=False, user="bob")
    with pytest.raises(FileNotFoundError):
        store.open_project("ward 7", create=True, user="bob")
    with pytest.raises(ValueError, match="belongs to someone else"):
        store.create_project("Ward 7", owner="bob")
    store.set_members("ward 7", ["alice", "bob"])  # alice shares it
    store.open_project("ward 7", create=False, user="bob").close()


def test_every_decision_records_the_user_who_made_it(alice_and_bob):
    project = store.create_project("ward", owner="alice")
    first, _ = project.add_image(b"x", "x.png", "unlabeled")
    second, _ = project.add_image(b"y", "y.png", "unlabeled")
    project.decide(first.id, "accept", "cat", session="tab-1")
    store.set_members("ward", ["alice", "bob"])
    as_bob = store.open_project("ward", create=False, user="bob")
    as_bob.decide_many({second.id: "dog"}, session="tab-2")
    as_bob.decide(first.id, "correct", "dog", session="tab-2")
    trail = as_bob.audit_trail()
    assert [(t["user"], t["action"], t["label"]) for t in trail] == [
        ("alice", "accept", "cat"),
        ("bob", "accept", "dog"),
        ("bob", "correct", "dog"),
    ]
    exported = list(csv.DictReader(io.StringIO(audit_trail_csv(trail).decode())))
    assert [(r["user"], r["session"], r["image"], r["action"]) for r in exported] == [
        ("alice", "tab-1", "x.png", "accept"),
        ("bob", "tab-2", "y.png", "accept"),
        ("bob", "tab-2", "x.png", "correct"),
    ]
    assert exported[0]["decided_at"].endswith("+00:00")


def _log_in(app: AppTest, user: str, password: str) -> AppTest:
    name, secret = app.text_input
    name.input(user)
    secret.input(password)
    return app.button[0].click().run()


def test_a_wrong_password_for_a_user_is_refused_and_throttled(alice_and_bob, monkeypatch):
    from views import access

    throttle = access.LoginThrottle()
    monkeypatch.setattr(access, "login_throttle", lambda: throttle)
    app = AppTest.from_file(APP, default_timeout=60).run()
    assert [t.label for t in app.text_input] == ["User", "Password"]
    for _ in range(access.FREE_ATTEMPTS):
        assert "Wrong user name or password." in [e.value for e in _log_in(app, "alice", "bob's secret!").error]
    other = _log_in(AppTest.from_file(APP, default_timeout=60).run(), "alice", "alice's secret")
    assert any("Too many wrong passwords" in e.value for e in other.error) and other.text_input
    throttle.locked_until = 0.0  # the lock-out has passed
    other = _log_in(other, "alice", "alice's secret")
    assert not other.text_input and not other.exception
    assert other.session_state["user"] == "alice"
    assert "Logged in as alice" in [c.value for c in other.sidebar.caption]


def test_a_user_cannot_open_another_users_project_even_by_its_url(alice_and_bob):
    store.create_project("alice ward", owner="alice").close()
    as_bob = AppTest.from_file(APP, default_timeout=60)
    as_bob.query_params["project"] = "alice-ward"
    _log_in(as_bob.run(), "bob", "bob's secret!").switch_page("views/upload.py").run()
    assert not as_bob.exception
    assert any("no longer exists" in w.value for w in as_bob.warning)
    assert not [s for s in as_bob.subheader if "alice" in s.value]
    assert all("alice-ward" not in box.options for box in as_bob.selectbox)

    as_alice = AppTest.from_file(APP, default_timeout=60)
    as_alice.query_params["project"] = "alice-ward"
    _log_in(as_alice.run(), "alice", "alice's secret").switch_page("views/upload.py").run()
    assert [s.value for s in as_alice.subheader] == ["Project: alice\\-ward"]
    assert as_alice.session_state["connection"][1].user == "alice"  # her decisions carry her name
