"""Labeling projects in SQLite: images (by content hash), labels, predictions and every decision
with a timestamp (the audit trail). A decision is committed before the call returns, so a UI
that waits for it never confirms something that could be lost.

Layout under the data directory (`MSSL_DATA_DIR`, default `./data`):
`projects/<slug>/project.sqlite` and `projects/<slug>/images/<sha256><ext>`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mssl_core.engine.data.paths import REPO_ROOT
from mssl_core.labeling.images import CHUNK

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('labeled', 'unlabeled')),
    label TEXT,
    file TEXT NOT NULL,
    added_at REAL NOT NULL,
    UNIQUE (sha256, role)
);
CREATE TABLE IF NOT EXISTS predictions (
    image_id INTEGER PRIMARY KEY REFERENCES images(id),
    label TEXT NOT NULL,
    confidence REAL NOT NULL,
    method TEXT NOT NULL,
    predicted_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id),
    action TEXT NOT NULL CHECK (action IN ('accept', 'correct', 'skip', 'undo')),
    label TEXT,
    session TEXT,
    decided_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS label_changes (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id),
    old_label TEXT,
    new_label TEXT NOT NULL,
    session TEXT,
    user TEXT,
    changed_at REAL NOT NULL
);
"""


def data_dir() -> Path:
    """Where labeling projects live; `MSSL_DATA_DIR` moves it."""
    return Path(os.environ.get("MSSL_DATA_DIR", REPO_ROOT / "data"))


MAX_PROJECT_NAME = 60


def slugify(name: str) -> str:
    """A folder-safe name for a project: letters, digits, '-' and '_' only."""
    if len(name) > MAX_PROJECT_NAME:
        raise ValueError(
            f"a project name can have at most {MAX_PROJECT_NAME} characters; this one has {len(name)}"
        )
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name.strip()).strip("-").lower()
    if not slug:
        raise ValueError(f"project name {name!r} has no letters or digits (a-z, 0-9)")
    return slug


def keep_files_private() -> None:
    """Files and folders this process creates from now on are its user's alone (0600 / 0700):
    they hold patient images, labels and the audit trail. Called by the app and the CLI."""
    os.umask(0o077)


SCHEMA_VERSION = 3  # PRAGMA user_version of a project database written by this code
# Each step takes a database from the version before to its own; version 0 is the layout of
# every project made before versions were recorded (the tables of SCHEMA, no index).
MIGRATIONS = {
    1: "CREATE INDEX IF NOT EXISTS decisions_by_image ON decisions (image_id, id)",
    2: "ALTER TABLE decisions ADD COLUMN user TEXT",  # the named user who decided (NULL: no log-in by name)
    # JSON {class: probability}, the model's when the image was shown for a one-by-one decision:
    # the decision then checks that confidence (review.review_factor); NULL for bulk accepts
    3: "ALTER TABLE decisions ADD COLUMN model_probabilities TEXT",
}


def migrate(db: sqlite3.Connection, folder: Path) -> None:
    """Bring a project database to SCHEMA_VERSION, one recorded step at a time, each in its own
    transaction; refuse one written by a newer version of this app."""
    db.executescript(SCHEMA)  # creates the tables of a new project; a no-op on an existing one
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"the project in {folder} was saved by a newer version of this app (database version "
            f"{version}, this one reads up to {SCHEMA_VERSION}); update the app to open it"
        )
    for step in range(version + 1, SCHEMA_VERSION + 1):
        with db:
            db.execute(MIGRATIONS[step])
            db.execute(f"PRAGMA user_version = {step}")


def content_sha256(content: bytes | Path) -> str:
    """The SHA-256 of bytes, or of a file's content read in chunks."""
    if isinstance(content, bytes):
        return hashlib.sha256(content).hexdigest()
    with content.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _write_durably(path: Path, content: bytes | Path) -> None:
    with path.open("wb") as handle:
        if isinstance(content, bytes):
            handle.write(content)
        else:
            with content.open("rb") as source:
                shutil.copyfileobj(source, handle, CHUNK)
        handle.flush()
        os.fsync(handle.fileno())


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


ANY_STATE = object()  # `decide` without a check of what the reviewer was shown


class DecisionConflict(ValueError):
    """Another session decided the image after this one was shown it; nothing was written."""


class StorageError(RuntimeError):
    """Something could not be saved (disk full, read-only folder); the message is for the user.
    The write was all-or-nothing: the last saved state is intact."""


def _storage_problem(error: BaseException, folder: Path) -> str:
    text = str(error).lower()
    errno_ = getattr(error, "errno", None)
    if "full" in text or errno_ == 28:  # ENOSPC
        return f"the disk holding {folder} is full"
    if "readonly" in text or "read-only" in text or errno_ in (13, 30):  # EACCES, EROFS
        return f"{folder} is read-only (or this app may not write there)"
    return f"{folder} cannot be written ({error})"


def storage_error(what: str, error: BaseException, folder: Path) -> StorageError:
    """The StorageError for `what` failing to be saved in `folder` because of `error`."""
    return StorageError(
        f"Could not save {what}: {_storage_problem(error, folder)}. "
        "Nothing was lost: everything saved before is intact. Free space or fix the folder, then retry."
    )


@dataclass(frozen=True)
class StoredImage:
    id: int
    sha256: str
    name: str
    role: str
    label: str | None
    path: Path


_RECORD_DECISION = (
    "INSERT INTO decisions (image_id, action, label, session, user, decided_at, model_probabilities) "
    "VALUES (?,?,?,?,?,?,?)"
)


def decision_action(chosen: str, predicted: str | None) -> str:
    """A reviewer who picks `chosen` accepts the pseudo-label if it is `predicted`, else corrects it."""
    return "accept" if chosen == predicted else "correct"


class LabelingProject:
    """One named project on disk; every write is committed before the method returns. `user`:
    who is logged in by name on this connection (None without named users), recorded with
    every decision."""

    def __init__(self, folder: Path, user: str | None = None):
        self.folder = folder
        self.user = user
        self.images_dir = folder / "images"
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(folder / "project.sqlite", timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        migrate(self.db, folder)

    @property
    def name(self) -> str:
        return self.folder.name

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _saving(self, what: str):
        """One committed transaction; failures become a `StorageError` naming what was not saved."""
        try:
            with self.db:
                yield self.db
        except (sqlite3.OperationalError, OSError) as error:
            raise storage_error(what, error, self.folder) from None

    def add_image(
        self, content: bytes | Path, name: str, role: str, label: str | None = None
    ) -> tuple[StoredImage, bool]:
        """Store an image (its bytes, or a file holding them, copied in chunks) under its content
        hash; (image, False) if it was already there."""
        sha = content_sha256(content)
        existing = self._image_where("sha256 = ? AND role = ?", (sha, role))
        if existing:
            return existing[0], False
        file = sha + Path(name).suffix.lower()[:10]
        target = self.images_dir / file
        with self._saving(f"image {name}") as db:
            if not target.exists():
                partial = target.with_suffix(target.suffix + ".part")
                try:
                    _write_durably(partial, content)
                    partial.replace(target)
                    _sync_folder(self.images_dir)  # the rename itself survives a power cut
                finally:
                    partial.unlink(missing_ok=True)
            cursor = db.execute(
                "INSERT INTO images (sha256, name, role, label, file, added_at) VALUES (?,?,?,?,?,?)",
                (sha, name, role, label, file, time.time()),
            )
        return self.image(cursor.lastrowid), True

    def image(self, image_id: int) -> StoredImage:
        found = self._image_where("id = ?", (image_id,))
        if not found:
            raise KeyError(f"no image {image_id} in project {self.name}")
        return found[0]

    def images(self, role: str | None = None) -> list[StoredImage]:
        """Images of a role; an image that is also labeled is not part of the unlabeled batch."""
        if role is None:
            return self._image_where("1", ())
        if role == "unlabeled":
            return self._image_where(
                "role = 'unlabeled' AND sha256 NOT IN (SELECT sha256 FROM images WHERE role = 'labeled')", ()
            )
        return self._image_where("role = ?", (role,))

    def _image_where(self, where: str, params: tuple) -> list[StoredImage]:
        rows = self.db.execute(
            f"SELECT id, sha256, name, role, label, file FROM images WHERE {where} ORDER BY id", params
        ).fetchall()
        return [StoredImage(r[0], r[1], r[2], r[3], r[4], self.images_dir / r[5]) for r in rows]

    def setting(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_setting(self, key: str, value: str) -> None:
        with self._saving(f"the setting {key!r}") as db:
            db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, value))

    def save_predictions(self, rows: list[tuple[int, str, float]], method: str) -> None:
        """Replace the predictions of the given images: (image id, label, confidence)."""
        now = time.time()
        with self._saving("the pseudo-labels") as db:
            db.executemany(
                "INSERT OR REPLACE INTO predictions VALUES (?,?,?,?,?)",
                [(i, label, float(conf), method, now) for i, label, conf in rows],
            )

    def version(self) -> tuple[int, tuple]:
        """(the latest decision, everything else predictions depend on: the images, labels
        changed since upload, the settings); cheap enough to read on every page run."""
        decision = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM decisions").fetchone()[0]
        images = self.db.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM images").fetchone()
        relabeled = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM label_changes").fetchone()[0]
        settings = tuple(self.db.execute("SELECT key, value FROM settings ORDER BY key").fetchall())
        return decision, (tuple(images), relabeled, settings)

    def has_predictions(self) -> bool:
        return self.db.execute("SELECT 1 FROM predictions LIMIT 1").fetchone() is not None

    def predictions(self) -> dict[int, tuple[str, float]]:
        rows = self.db.execute("SELECT image_id, label, confidence FROM predictions").fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def decide(
        self,
        image_id: int,
        action: str,
        label: str | None = None,
        session: str = "",
        shown: tuple[str, str | None] | None | object = ANY_STATE,
        model_probabilities: dict[str, float] | None = None,
    ) -> None:
        """Record a reviewer's decision (committed, durable) in the audit trail. `shown`: the
        image's decision (None: undecided) when the reviewer saw it; if another session has
        changed it since, DecisionConflict is raised and nothing is written.
        `model_probabilities`: {class: probability} the model gave the image as it was shown."""
        self.image(image_id)
        if action in ("accept", "correct") and not label:
            raise ValueError(f"a {action} decision needs a label")
        with self._saving(f"the decision on image {image_id}") as db:
            db.execute("BEGIN IMMEDIATE")  # no other session writes between the check and the insert
            if shown is not ANY_STATE and self.decision_of(image_id) != shown:
                raise DecisionConflict(
                    f"{self.image(image_id).name} was decided in another session since it was shown "
                    "here; nothing was changed. Look at it again."
                )
            probabilities = None if model_probabilities is None else json.dumps(model_probabilities)
            db.execute(
                _RECORD_DECISION,
                (image_id, action, label, session, self.user, time.time(), probabilities),
            )

    def decide_many(
        self, labels: dict[int, str], predicted: dict[int, str] | None = None, session: str = ""
    ) -> None:
        """Give many images (id -> label) their labels in one transaction, all or nothing: an
        accept where the label is the pseudo-label in `predicted` (default: every one is), else
        a correction."""
        predicted = labels if predicted is None else predicted
        now = time.time()
        rows = [
            (image_id, decision_action(label, predicted.get(image_id)), label, session, self.user, now, None)
            for image_id, label in labels.items()
        ]
        with self._saving(f"{len(labels)} labels") as db:
            db.executemany(_RECORD_DECISION, rows)

    def decision_of(self, image_id: int) -> tuple[str, str | None] | None:
        """The image's current decision (None: undecided, or its last decision was undone)."""
        row = self.db.execute(
            "SELECT action, label FROM decisions WHERE image_id = ? ORDER BY id DESC LIMIT 1", (image_id,)
        ).fetchone()
        return None if row is None or row[0] == "undo" else (row[0], row[1])

    def undoable(self, session: str) -> dict | None:
        """The latest decision `session` made that is still its image's current one (an undo is
        never undone, and a decision someone else has changed since is not this session's)."""
        row = self.db.execute(
            "SELECT d.id, d.image_id, i.name, d.action, d.label "
            "FROM decisions d JOIN images i ON i.id = d.image_id "
            "WHERE d.session = ? AND d.action != 'undo' AND NOT EXISTS "
            "(SELECT 1 FROM decisions later WHERE later.image_id = d.image_id AND later.id > d.id) "
            "ORDER BY d.id DESC LIMIT 1",
            (session,),
        ).fetchone()
        return (
            None if row is None else dict(zip(("id", "image_id", "image", "action", "label"), row, strict=True))
        )

    def current_decisions(self) -> dict[int, tuple[str, str | None]]:
        """The latest decision per image (undo removes an image's decision)."""
        rows = self.db.execute("SELECT image_id, action, label FROM decisions ORDER BY id").fetchall()
        latest: dict[int, tuple[str, str | None]] = {}
        for image_id, action, label in rows:
            if action == "undo":
                latest.pop(image_id, None)
            else:
                latest[image_id] = (action, label)
        return latest

    def reviewed_one_by_one(self) -> list[tuple[str, dict[str, float]]]:
        """(label given, the model's probabilities when shown) of each image whose current
        decision a person made one by one (an accept or a correction with the probabilities
        recorded), in the order decided."""
        rows = self.db.execute(
            "SELECT d.label, d.model_probabilities FROM decisions d WHERE d.model_probabilities IS NOT NULL "
            "AND d.action IN ('accept', 'correct') AND NOT EXISTS "
            "(SELECT 1 FROM decisions later WHERE later.image_id = d.image_id AND later.id > d.id) "
            "ORDER BY d.id"
        ).fetchall()
        return [(label, json.loads(probabilities)) for label, probabilities in rows]

    def relabel(self, image_id: int, label: str, session: str = "") -> None:
        """Set a labeled image's class, or confirm it (the same label): both are recorded, so
        an image a person has confirmed is not flagged again (`confirmed_labels`)."""
        image = self.image(image_id)
        if image.role != "labeled":
            raise ValueError(f"{image.name} is not a labeled image; review decides batch images")
        with self._saving(f"the label of {image.name}") as db:
            db.execute("UPDATE images SET label = ? WHERE id = ?", (label, image_id))
            db.execute(
                "INSERT INTO label_changes (image_id, old_label, new_label, session, user, changed_at) "
                "VALUES (?,?,?,?,?,?)",
                (image_id, image.label, label, session, self.user, time.time()),
            )

    def confirmed_labels(self) -> set[int]:
        """Labeled images whose current label a person set or confirmed after uploading."""
        rows = self.db.execute(
            "SELECT c.image_id FROM label_changes c JOIN images i ON i.id = c.image_id "
            "WHERE c.new_label = i.label"
        ).fetchall()
        return {image_id for (image_id,) in rows}

    def audit_trail(self) -> list[dict]:
        """Every decision in order: who (user, browser session), when, what, on which image; a
        labeled example's label set or confirmed after a flag is a `relabel`."""
        rows = self.db.execute(
            "SELECT * FROM ("
            "SELECT d.id, d.image_id, i.name, d.action, d.label, d.session, d.user, d.decided_at "
            "FROM decisions d JOIN images i ON i.id = d.image_id UNION ALL "
            "SELECT c.id, c.image_id, i.name, 'relabel', c.new_label, c.session, c.user, c.changed_at "
            "FROM label_changes c JOIN images i ON i.id = c.image_id) ORDER BY 8, 1"
        ).fetchall()
        keys = ("id", "image_id", "image", "action", "label", "session", "user", "decided_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]


def project_folder(name: str) -> Path:
    return data_dir() / "projects" / slugify(name)


def open_project(name: str, create: bool = True, user: str | None = None) -> LabelingProject:
    """Open (or create) a project by name; for a named `user`, only one they are a member of:
    anyone else's is reported as not there at all."""
    folder = project_folder(name)
    exists = (folder / "project.sqlite").exists()
    if (not create and not exists) or (exists and not may_open(name, user)):
        raise FileNotFoundError(f"no project named {name!r} in {data_dir()}")
    return LabelingProject(folder, user)


def create_project(name: str, owner: str | None = None) -> LabelingProject:
    """A new, empty project, its `owner` (a named user) its only member; refused if its folder
    exists already (names differing only in case or punctuation share one)."""
    folder = project_folder(name)
    if (folder / "project.sqlite").exists():
        where = "open it from the list" if may_open(name, owner) else "it belongs to someone else"
        raise ValueError(
            f"a project '{folder.name}' already exists (names that differ only in case or punctuation "
            f"are the same project): {where}, or choose another name"
        )
    project = LabelingProject(folder, owner)
    if owner is not None:
        set_members(name, [owner])
    return project


def list_projects(user: str | None = None) -> list[str]:
    """Every project's name, or only those a named `user` may open."""
    root = data_dir() / "projects"
    names = sorted(p.name for p in root.glob("*") if (p / "project.sqlite").exists())
    return [name for name in names if may_open(name, user)]


def members(name: str) -> list[str]:
    """The named users who may open the project. Empty: every user may (a project made before
    there were named users, or without them)."""
    try:
        return json.loads((project_folder(name) / "members.json").read_text())
    except FileNotFoundError:
        return []


def set_members(name: str, users: list[str]) -> None:
    """Who may open the project from now on (its creator, and whoever they share it with)."""
    folder = project_folder(name)
    partial = folder / "members.json.part"
    try:
        _write_durably(partial, json.dumps(sorted(set(users))).encode())
        partial.replace(folder / "members.json")
        _sync_folder(folder)
    except OSError as error:
        raise storage_error("who may open the project", error, folder) from None
    finally:
        partial.unlink(missing_ok=True)


def may_open(name: str, user: str | None) -> bool:
    """Whether `user` may open the project (None: no named users, so whoever is logged in)."""
    allowed = members(name)
    return user is None or not allowed or user in allowed


def delete_project(name: str, embeddings=None) -> None:
    """Remove a project's images, database and everything else in its folder, and from the
    shared embedding cache (`embeddings`, an EmbeddingCache) the embeddings of its images
    that no other project holds."""
    if embeddings is not None:
        project = open_project(name, create=False)
        doomed = {image.sha256 for image in project.images()}
        project.close()
        for other in list_projects():
            if other != slugify(name):
                project = open_project(other, create=False)
                doomed -= {image.sha256 for image in project.images()}
                project.close()
        embeddings.delete_hashes(sorted(doomed))
    shutil.rmtree(project_folder(name))
