"""Who may use the app: the log-in page, the session's user, and the lock that keeps every page
closed until then. Light on purpose (Streamlit and the user list only): app.py imports it before
declaring the navigation, so the first page shows without waiting for the engine."""

from __future__ import annotations

import hmac
import os
import re
import threading
import time

import streamlit as st

from mssl_core.project.users import list_users, password_is_right


def configured_password() -> str | None:
    """The app password: environment variable MSSL_PASSWORD, else `password` in Streamlit
    secrets (.streamlit/secrets.toml); None means the app is open (the default, on 127.0.0.1)."""
    if os.environ.get("MSSL_PASSWORD"):
        return os.environ["MSSL_PASSWORD"]
    try:
        return st.secrets.get("password") or None
    except FileNotFoundError:  # no secrets file at all
        return None


def login_required() -> bool:
    """Named users exist (`python -m mssl_core users add`), or one password is configured."""
    return bool(list_users()) or configured_password() is not None


def current_user() -> str | None:
    """The named user logged in to this session; None without named users."""
    return st.session_state.get("user")


IDLE_MINUTES = float(os.environ.get("MSSL_IDLE_MINUTES", "30"))  # then the password is asked again
FREE_ATTEMPTS = 5  # wrong passwords before each further one waits
LOCKOUT_SECONDS = 60  # the wait after FREE_ATTEMPTS, doubling with each further failure, at most an hour


class LoginThrottle:
    """Wrong passwords for the whole server (a guesser opens new sessions at will): after
    FREE_ATTEMPTS in a row, no attempt is even checked until a lock-out has passed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.failures = 0
        self.locked_until = 0.0

    def seconds_left(self) -> float:
        with self.lock:
            return max(0.0, self.locked_until - time.monotonic())

    def failed(self) -> None:
        with self.lock:
            self.failures += 1
            if self.failures >= FREE_ATTEMPTS:
                wait = min(LOCKOUT_SECONDS * 2 ** (self.failures - FREE_ATTEMPTS), 3600)
                self.locked_until = time.monotonic() + wait

    def succeeded(self) -> None:
        with self.lock:
            self.failures, self.locked_until = 0, 0.0


@st.cache_resource
def login_throttle() -> LoginThrottle:
    return LoginThrottle()


def locked() -> bool:
    """A log-in is required and this session has not logged in, has been idle for longer than
    IDLE_MINUTES, or its named user has been removed since (then it is logged out)."""
    if not login_required():
        return False
    last_seen = st.session_state.get("last_seen", 0.0)
    if st.session_state.get("authenticated") and time.monotonic() - last_seen > IDLE_MINUTES * 60:
        log_out()
    if current_user() is not None and current_user() not in list_users():
        log_out()
    if st.session_state.get("authenticated"):
        st.session_state["last_seen"] = time.monotonic()
        return False
    return True


def set_current_project(name: str) -> None:
    """Open project `name` in this session; kept in the URL, so a refresh resumes it."""
    st.session_state["project"] = name
    st.query_params["project"] = name


def log_out() -> None:
    """Forget this session's log-in and the project it had open."""
    for key in ("authenticated", "user", "last_seen", "project"):
        st.session_state.pop(key, None)
    st.query_params.pop("project", None)
    if held := st.session_state.pop("connection", None):
        held[1].close()


def require_unlocked() -> None:
    """Every page's first line. app.py already shows only the log-in page while locked; this
    holds should a page file ever be run on its own."""
    if locked():
        password_prompt()
        st.stop()


def password_prompt() -> None:
    """The log-in page: a named user and their password (when there are named users), else the
    one password, unlocks every page for this browser session."""
    st.title("MSSL Label Assist")
    by_name = bool(list_users())
    with st.form("login"):
        user = st.text_input("User", autocomplete="username") if by_name else None
        given = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Open")
    if not submitted:
        return
    throttle = login_throttle()
    if wait := throttle.seconds_left():
        st.error(f"Too many wrong passwords: try again in {wait:.0f} s.")
    elif password_is_right(user.strip(), given) if by_name else _is_the_password(given):
        throttle.succeeded()
        st.session_state["authenticated"] = True
        st.session_state["user"] = user.strip() if by_name else None
        st.session_state["last_seen"] = time.monotonic()
        st.rerun()
    else:
        throttle.failed()
        st.error("Wrong user name or password." if by_name else "Wrong password.")


def _is_the_password(given: str) -> bool:
    return hmac.compare_digest(given.encode(), configured_password().encode())


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$])")


def md(text: str) -> str:
    """`text` (a class, file or project name: anyone's input) shown as itself in markdown: no
    link, image (a request off the machine), formatting or icon can come out of it."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)
