"""Everything the bridge remembers, in one SQLite file (WAL), through plain SQL.

One writer connection takes every write, behind one lock; callbacks reach it through a
group commit, so many concurrent requests share one transaction and one fsync. A second,
read-only connection serves the queries of the workers and of `/healthz`, which WAL lets
run beside a commit in progress. Times are Unix seconds (UTC) as REAL.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

log = logging.getLogger(__name__)

# Each step runs in its own transaction and moves PRAGMA user_version one up.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE rooms (
        room_id         TEXT PRIMARY KEY,
        sender_number   TEXT NOT NULL,
        topic_id        INTEGER,
        header_pending  INTEGER NOT NULL DEFAULT 1,
        last_inbox_at   REAL NOT NULL,
        created_at      REAL NOT NULL,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        attempts        INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT
    );
    CREATE UNIQUE INDEX rooms_by_topic ON rooms (topic_id) WHERE topic_id IS NOT NULL;
    CREATE TABLE inbound (
        id                  INTEGER PRIMARY KEY,
        ref_no              TEXT NOT NULL UNIQUE,
        room_id             TEXT NOT NULL REFERENCES rooms (room_id),
        text                TEXT NOT NULL,
        inbox_at            REAL NOT NULL,
        received_at         REAL NOT NULL,
        posted_at           REAL,
        parts_done          INTEGER NOT NULL DEFAULT 0,
        telegram_message_id INTEGER
    );
    CREATE INDEX inbound_waiting ON inbound (room_id, id) WHERE posted_at IS NULL;
    CREATE TABLE status_events (
        id          INTEGER PRIMARY KEY,
        ref_no      TEXT NOT NULL,
        status      TEXT NOT NULL,
        status_at   REAL NOT NULL,
        received_at REAL NOT NULL,
        UNIQUE (ref_no, status)
    );
    """,
    """
    CREATE TABLE outbound (
        id                  INTEGER PRIMARY KEY,
        room_id             TEXT NOT NULL REFERENCES rooms (room_id),
        operator_message_id INTEGER NOT NULL UNIQUE,
        operator_id         INTEGER,
        kind                TEXT NOT NULL,
        text                TEXT,
        file_id             TEXT,
        file_name           TEXT,
        file_mime           TEXT,
        state               TEXT NOT NULL DEFAULT 'queued',
        attempts            INTEGER NOT NULL DEFAULT 0,
        next_attempt_at     REAL NOT NULL DEFAULT 0,
        ref_no              TEXT UNIQUE,
        status              TEXT,
        error               TEXT,
        display             TEXT NOT NULL DEFAULT 'queued',
        shown               TEXT NOT NULL DEFAULT 'queued',
        created_at          REAL NOT NULL,
        sent_at             REAL
    );
    CREATE INDEX outbound_queue ON outbound (room_id, id) WHERE state = 'queued';
    CREATE INDEX outbound_in_flight ON outbound (id) WHERE state = 'sending';
    CREATE INDEX outbound_feedback ON outbound (id) WHERE display != shown;
    ALTER TABLE status_events ADD COLUMN applied INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX status_unapplied ON status_events (ref_no) WHERE applied = 0;
    CREATE TABLE media (
        token        TEXT PRIMARY KEY,
        path         TEXT NOT NULL,
        content_type TEXT NOT NULL,
        filename     TEXT NOT NULL,
        expires_at   REAL NOT NULL
    );
    CREATE INDEX media_expiry ON media (expires_at);
    """,
    """
    CREATE TABLE facts (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE alerts (
        key          TEXT PRIMARY KEY,
        active       INTEGER NOT NULL,
        since        REAL NOT NULL,
        last_sent_at REAL NOT NULL,
        detail       TEXT NOT NULL DEFAULT ''
    );
    ALTER TABLE rooms ADD COLUMN reminded_for REAL;
    ALTER TABLE rooms ADD COLUMN closed_notice_for REAL;
    CREATE INDEX rooms_by_last_inbox ON rooms (last_inbox_at);
    CREATE INDEX outbound_by_room ON outbound (room_id, created_at);
    """,
    # Intake in one statement per batch: the view's trigger records the room and the
    # message together, and skips a ref_no seen before without touching the room.
    """
    CREATE VIEW intake AS
        SELECT i.ref_no, i.room_id, r.sender_number, i.text, i.inbox_at, i.received_at
        FROM inbound AS i JOIN rooms AS r USING (room_id);
    CREATE TRIGGER intake_insert INSTEAD OF INSERT ON intake
    WHEN NOT EXISTS (SELECT 1 FROM inbound WHERE ref_no = NEW.ref_no)
    BEGIN
        INSERT INTO rooms (room_id, sender_number, last_inbox_at, created_at)
        VALUES (NEW.room_id, NEW.sender_number, NEW.inbox_at, NEW.received_at)
        ON CONFLICT (room_id) DO UPDATE SET
            sender_number = excluded.sender_number,
            last_inbox_at = max(last_inbox_at, excluded.last_inbox_at);
        INSERT INTO inbound (ref_no, room_id, text, inbox_at, received_at)
        VALUES (NEW.ref_no, NEW.room_id, NEW.text, NEW.inbox_at, NEW.received_at);
    END;
    CREATE INDEX rooms_failing ON rooms (room_id) WHERE attempts > 0;
    """,
    # How long a reply has been waiting counts from when it was queued (again, after Retry),
    # so the operator hears of a reply that waits for more than a minute.
    """
    ALTER TABLE outbound ADD COLUMN queued_at REAL;
    UPDATE outbound SET queued_at = created_at WHERE state = 'queued';
    """,
    # Closed topics are reopened before a customer message goes in (an admin bot may post into
    # a closed topic without error); rooms take turns by when their last post went out; a
    # message Telegram refused for good is kept, with the reason, out of the queue.
    """
    ALTER TABLE rooms ADD COLUMN closed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE rooms ADD COLUMN last_post_at REAL NOT NULL DEFAULT 0;
    ALTER TABLE inbound ADD COLUMN refused TEXT;
    """,
    # Template messages share the outbound queue: the filled-in template (JSON) and the
    # message in the topic that shows its rendered text (and carries its reactions).
    """
    ALTER TABLE outbound ADD COLUMN template TEXT;
    ALTER TABLE outbound ADD COLUMN post_message_id INTEGER;
    CREATE INDEX outbound_unposted ON outbound (id)
        WHERE kind = 'template' AND post_message_id IS NULL;
    CREATE INDEX outbound_templates_sent ON outbound (sent_at) WHERE kind = 'template';
    """,
    # A reply written into a closed window is kept as `pending` until the customer writes
    # again; the window (its last_inbox_at) for which the bridge sent a reopen template by
    # itself, so it does so once per window, across restarts.
    """
    ALTER TABLE rooms ADD COLUMN reopen_sent_for REAL;
    CREATE INDEX outbound_pending ON outbound (room_id, id) WHERE state = 'pending';
    """,
    # One topic per customer (their E.164 number): every NusaSMS room of the number maps to
    # the customer's row (`wa_rooms`), replies go to the latest of them (`reply_room`).
    # Rooms of one number already in separate topics merge into the newest topic; the older
    # topics become aliases (a reply there reaches the customer) and get one note each.
    """
    ALTER TABLE rooms ADD COLUMN number TEXT NOT NULL DEFAULT '';
    ALTER TABLE rooms ADD COLUMN name TEXT;
    ALTER TABLE rooms ADD COLUMN reply_room TEXT;
    UPDATE rooms SET number = '+' || ltrim(sender_number, '+'), reply_room = room_id;
    CREATE TABLE wa_rooms (
        wa_room_id TEXT PRIMARY KEY,
        room_id    TEXT NOT NULL,
        first_at   REAL NOT NULL,
        last_at    REAL NOT NULL
    );
    INSERT INTO wa_rooms (wa_room_id, room_id, first_at, last_at)
        SELECT room_id, room_id,
            coalesce((SELECT min(i.inbox_at) FROM inbound AS i WHERE i.room_id = r.room_id),
                     r.last_inbox_at),
            r.last_inbox_at
        FROM rooms AS r;
    CREATE TABLE customer_merge AS
        SELECT r.room_id AS old, (
            SELECT p.room_id FROM rooms AS p WHERE p.number = r.number
            ORDER BY p.topic_id IS NULL, p.created_at DESC, p.room_id DESC LIMIT 1
        ) AS new
        FROM rooms AS r;
    DELETE FROM customer_merge WHERE old = new;
    CREATE TABLE topic_aliases (
        topic_id INTEGER PRIMARY KEY,
        room_id  TEXT NOT NULL REFERENCES rooms (room_id),
        note     TEXT NOT NULL DEFAULT 'due'
    );
    INSERT INTO topic_aliases (topic_id, room_id)
        SELECT r.topic_id, m.new FROM customer_merge AS m JOIN rooms AS r ON r.room_id = m.old
        WHERE r.topic_id IS NOT NULL;
    UPDATE rooms SET
        last_inbox_at = (SELECT max(o.last_inbox_at) FROM rooms AS o WHERE o.number = rooms.number),
        reply_room = (
            SELECT o.room_id FROM rooms AS o WHERE o.number = rooms.number
            ORDER BY o.last_inbox_at DESC, o.created_at DESC LIMIT 1
        )
    WHERE room_id IN (SELECT new FROM customer_merge);
    UPDATE wa_rooms SET room_id = (SELECT new FROM customer_merge WHERE old = wa_rooms.room_id)
    WHERE room_id IN (SELECT old FROM customer_merge);
    UPDATE inbound SET room_id = (SELECT new FROM customer_merge WHERE old = inbound.room_id)
    WHERE room_id IN (SELECT old FROM customer_merge);
    UPDATE outbound SET room_id = (SELECT new FROM customer_merge WHERE old = outbound.room_id)
    WHERE room_id IN (SELECT old FROM customer_merge);
    DELETE FROM rooms WHERE room_id IN (SELECT old FROM customer_merge);
    DROP TABLE customer_merge;
    CREATE INDEX rooms_by_number ON rooms (number);
    CREATE INDEX wa_rooms_by_room ON wa_rooms (room_id);
    CREATE INDEX topic_aliases_due ON topic_aliases (topic_id) WHERE note = 'due';
    DROP VIEW intake;
    CREATE VIEW intake AS
        SELECT i.ref_no, i.room_id, r.sender_number, r.number, i.text, i.inbox_at, i.received_at
        FROM inbound AS i JOIN rooms AS r USING (room_id);
    CREATE TRIGGER intake_insert INSTEAD OF INSERT ON intake
    WHEN NOT EXISTS (SELECT 1 FROM inbound WHERE ref_no = NEW.ref_no)
    BEGIN
        INSERT INTO wa_rooms (wa_room_id, room_id, first_at, last_at)
        VALUES (
            NEW.room_id,
            coalesce(
                (SELECT room_id FROM rooms WHERE number = NEW.number
                 ORDER BY created_at DESC LIMIT 1),
                NEW.room_id
            ),
            NEW.inbox_at,
            NEW.inbox_at
        )
        ON CONFLICT (wa_room_id) DO UPDATE SET
            first_at = min(first_at, excluded.first_at),
            last_at = max(last_at, excluded.last_at);
        INSERT INTO rooms (room_id, sender_number, number, reply_room, last_inbox_at, created_at)
        SELECT w.room_id, NEW.sender_number, NEW.number, NEW.room_id, NEW.inbox_at,
               NEW.received_at
        FROM wa_rooms AS w WHERE w.wa_room_id = NEW.room_id
        ON CONFLICT (room_id) DO UPDATE SET
            sender_number = excluded.sender_number,
            reply_room = CASE WHEN excluded.last_inbox_at >= last_inbox_at
                              OR reply_room IS NULL
                         THEN excluded.reply_room ELSE reply_room END,
            last_inbox_at = max(last_inbox_at, excluded.last_inbox_at);
        INSERT INTO inbound (ref_no, room_id, text, inbox_at, received_at)
        VALUES (
            NEW.ref_no,
            (SELECT room_id FROM wa_rooms WHERE wa_room_id = NEW.room_id),
            NEW.text,
            NEW.inbox_at,
            NEW.received_at
        );
    END;
    """,
    # Operators' Telegram updates, stored before Telegram is told they arrived (the next
    # getUpdates offset, or the webhook's 200) and handled from here, so kill -9 loses none.
    """
    CREATE TABLE telegram_updates (
        update_id INTEGER PRIMARY KEY,
        raw TEXT NOT NULL,
        received_at REAL NOT NULL,
        done_at REAL
    );
    CREATE INDEX telegram_updates_pending ON telegram_updates (update_id) WHERE done_at IS NULL;
    """,
    # A customer is (channel, number): WhatsApp Official (every room so far), the WhatsApp
    # gateway or SMS. A reply may go out on another channel than its room's (`/sms`); NULL
    # is the room's own. Status events keep the provider's error code (`err_code`).
    """
    ALTER TABLE rooms ADD COLUMN channel TEXT NOT NULL DEFAULT 'wa_official';
    CREATE INDEX rooms_by_customer ON rooms (channel, number);
    ALTER TABLE outbound ADD COLUMN channel TEXT;
    ALTER TABLE status_events ADD COLUMN error TEXT;
    """,
)

# A batch bigger than this waits for the next commit; it bounds one transaction's latency.
MAX_BATCH = 512
# A callback waits at most about this long for its commit before it is answered 503.
COMMIT_TIMEOUT_SECONDS = 10.0


class StoreError(Exception):
    """The database could not be opened or written; `fix` says what a person can do."""

    def __init__(self, problem: str, *, fix: str = "") -> None:
        super().__init__(f"{problem}: {fix}" if fix else problem)
        self.problem = problem
        self.fix = fix


class SchemaTooNewError(StoreError):
    """The database was written by a newer version of the bridge."""


class DatabaseInUseError(StoreError):
    """Another bridge process holds the database's instance lock."""


# What to do about an unusable storage.path, and about a database that is there but
# cannot be read as ours.
_FIX_PATH = "set storage.path to a file in a folder this user may write to"
_RESTORE = "restore it from a backup, or move it away to start with an empty database"


class InstanceLock:
    """An exclusive `flock` on `<database>.lock`, held for as long as the process keeps it.

    Two bridges on one database would post every message twice and create two topics per
    room. The operating system drops the lock when its holder ends, however it ends (kill -9
    included), so a lock file left behind never blocks the next start.
    """

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, database: Path) -> InstanceLock:
        """Take the lock or raise StoreError (DatabaseInUseError if another bridge has it)."""
        _prepare_folder(database)
        path = database.with_name(database.name + ".lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(
                f"cannot create the lock file {path} ({exc.strerror})",
                fix=_FIX_PATH,
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise StoreError(f"cannot lock {path} ({exc.strerror})", fix=_FIX_PATH) from None
            raise DatabaseInUseError(
                f"database {database} is in use by another bridge"
                + (f" (process {holder})" if holder else ""),
                fix="stop that one first, or give this one its own storage.path",
            ) from None
        # Who holds it, for the message a second instance prints.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        """Let another bridge open the database."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return text
    return ""


def _prepare_folder(database: Path) -> None:
    """Create the database's folder; StoreError saying what is wrong with the path if not."""
    if database.is_dir():
        raise StoreError(f"storage.path {database} is a folder, not a file", fix=_FIX_PATH)
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next(
            (p for p in (database.parent, *database.parent.parents) if p.exists()), database
        )
        raise StoreError(
            f"cannot create the folder of database {database}: {blocker} is a file, not a folder",
            fix=_FIX_PATH,
        ) from None
    except OSError as exc:
        raise StoreError(
            f"cannot create the folder {database.parent} ({exc.strerror})",
            fix=_FIX_PATH,
        ) from None


def _cannot_open(database: Path, exc: sqlite3.Error) -> StoreError:
    text = str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and (
        "not a database" in text or "malformed" in text or "corrupt" in text
    ):
        return StoreError(
            f"database {database} is damaged or not an SQLite database ({text})", fix=_RESTORE
        )
    return StoreError(f"cannot open database {database} ({text})", fix=_FIX_PATH)


def inspect_database(database: Path) -> str:
    """What a bridge would find at `database`, changing nothing; StoreError if it could not run.

    For `bridge check`: the folder can be written, an existing file is a database of a schema
    this bridge knows and its tables can be read.
    """
    if database.is_dir():
        raise StoreError(f"storage.path {database} is a folder, not a file", fix=_FIX_PATH)
    existing = next((p for p in database.parents if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise StoreError(f"the folder of database {database} cannot be created", fix=_FIX_PATH)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StoreError(f"this user may not write in {existing}", fix=_FIX_PATH)
    if not database.exists():
        return f"{database} (a new database will be created)"
    if not os.access(database, os.R_OK | os.W_OK):
        raise StoreError(f"this user may not write {database}", fix=_FIX_PATH)
    try:
        db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            db.execute("PRAGMA busy_timeout = 2000")
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > len(MIGRATIONS):
                raise _too_new(database, version)
            for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
                # Names from sqlite_master: our own schema's tables.
                db.execute(f'SELECT 1 FROM "{table}" LIMIT 1').fetchall()  # noqa: S608
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise _cannot_open(database, exc) from exc
    return f"{database} (schema version {version} of {len(MIGRATIONS)})"


def _too_new(database: Path | str, version: int) -> SchemaTooNewError:
    return SchemaTooNewError(
        f"database {database} has schema version {version}, newer than this bridge knows "
        f"({len(MIGRATIONS)})",
        fix="upgrade the bridge instead of downgrading it (or restore a backup made by this "
        "version)",
    )


@dataclass(frozen=True, slots=True)
class NewInbound:
    """A customer message as it enters the queue."""

    ref_no: str
    room_id: str
    sender_number: str
    text: str
    inbox_at: float
    received_at: float
    # The customer: phones.e164(sender_number); rooms of one number share one topic.
    number: str = ""


@dataclass(frozen=True, slots=True)
class NewStatus:
    """A delivery status as NusaSMS reported it."""

    ref_no: str
    status: str
    status_at: float
    received_at: float


@dataclass(frozen=True, slots=True)
class Room:
    """A WhatsApp conversation and the topic it lives in."""

    room_id: str
    sender_number: str
    topic_id: int | None
    header_pending: bool
    last_inbox_at: float
    attempts: int
    last_error: str | None
    closed: bool = False
    # The customer (E.164), as /new or the first callback gave it.
    number: str = ""
    name: str | None = None
    # The NusaSMS room replies go to: the customer's latest; None before they ever wrote.
    reply_room: str | None = None
    # Which NusaSMS channel the customer writes on (bridge.channels.base.ChannelName).
    channel: str = "wa_official"


@dataclass(frozen=True, slots=True)
class WaRoom:
    """One NusaSMS room of a customer: its id and its first and last message."""

    wa_room_id: str
    first_at: float
    last_at: float


@dataclass(frozen=True, slots=True)
class TopicAlias:
    """An older topic of a customer (from before one topic per customer) and its note."""

    topic_id: int
    room_id: str
    note: str


@dataclass(frozen=True, slots=True)
class Inbound:
    """A customer message waiting to be posted."""

    id: int
    ref_no: str
    room_id: str
    text: str
    inbox_at: float
    received_at: float
    parts_done: int


@dataclass(frozen=True, slots=True)
class QueueStats:
    """How the inbound queue is doing."""

    waiting: int
    rooms_waiting: int
    oldest_received_at: float | None
    failing_rooms: int


@dataclass(frozen=True, slots=True)
class NewReply:
    """An operator's message, as it enters the outbound queue."""

    room_id: str
    operator_message_id: int
    operator_id: int | None
    kind: str
    text: str | None
    file_id: str | None = None
    file_name: str | None = None
    file_mime: str | None = None
    # A template message (`TemplateMessage.to_json`), for kind "template".
    template: str | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """An operator's reply and what became of it."""

    id: int
    room_id: str
    operator_message_id: int
    kind: str
    text: str | None
    file_id: str | None
    file_name: str | None
    file_mime: str | None
    state: str
    attempts: int
    ref_no: str | None
    status: str | None
    error: str | None
    display: str
    shown: str
    operator_id: int | None = None
    template: str | None = None
    # For a template: the bridge's message showing it in the topic (None: not posted yet).
    post_message_id: int | None = None
    # The channel it goes out on when not the room's own (`/sms`); None: the room's.
    channel: str | None = None

    @property
    def shown_on(self) -> int:
        """The Telegram message its reactions and notices go to."""
        return self.post_message_id or self.operator_message_id


@dataclass(frozen=True, slots=True)
class PendingStatus:
    """A status event not yet applied, with the reply it belongs to."""

    event_id: int
    status: str
    reply_id: int
    reply_status: str | None


@dataclass(frozen=True, slots=True)
class MediaFile:
    """A file served to NusaSMS under an expiring token."""

    token: str
    path: str
    content_type: str
    filename: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class AlertState:
    """One alert's current episode."""

    key: str
    active: bool
    since: float
    last_sent_at: float
    detail: str


@dataclass(frozen=True, slots=True)
class Pruned:
    """How many rows one retention pass deleted."""

    inbound: int
    replies: int
    status_events: int

    @property
    def total(self) -> int:
        """All rows deleted."""
        return self.inbound + self.replies + self.status_events


# (table, its time column, what "done with" means) for data retention.
_PRUNABLE = (
    ("inbound", "received_at", "posted_at IS NOT NULL"),
    (
        "outbound",
        "created_at",
        "state IN ('sent', 'failed', 'unknown', 'expired') AND display = shown",
    ),
    (
        "status_events",
        "received_at",
        "(applied = 1 OR NOT EXISTS "
        "(SELECT 1 FROM outbound AS o WHERE o.ref_no = status_events.ref_no))",
    ),
)
_MAX_ID = 2**63 - 1
# A reply never overtakes an earlier pending reply of its room (a template, which reopens
# the window, does): the pending ones are queued first, once the customer wrote again.
_NOT_BEHIND_PENDING = (
    "(kind = 'template' OR NOT EXISTS (SELECT 1 FROM outbound AS p "
    "WHERE p.state = 'pending' AND p.room_id = outbound.room_id AND p.id < outbound.id))"
)


_REPLY_COLUMNS = (
    "id, room_id, operator_message_id, kind, text, file_id, file_name, file_mime, state, "
    "attempts, ref_no, status, error, display, shown, operator_id, template, post_message_id, "
    "channel"
)
_ROOM_COLUMNS = (
    "room_id, sender_number, topic_id, header_pending, last_inbox_at, attempts, last_error, closed,"
    " number, name, reply_room, channel"
)


def _room(row: sqlite3.Row | tuple[Any, ...]) -> Room:
    return Room(
        row[0],
        row[1],
        row[2],
        bool(row[3]),
        row[4],
        row[5],
        row[6],
        bool(row[7]),
        row[8],
        row[9],
        row[10],
        row[11],
    )


@dataclass(slots=True)
class _Pending:
    item: NewInbound | NewStatus
    done: asyncio.Future[None]


class Store:
    """The bridge's SQLite database."""

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._pending: list[_Pending] = []
        self._has_pending = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self.batches = 0
        # The outcome of the last write (any transaction, callbacks' group commits too), so
        # /healthz and the alerts can tell a database that takes no writes.
        self.write_failing = False
        self.last_write_ok_at: float | None = None
        self.last_write_failed_at: float | None = None
        self.last_write_error = ""

    @classmethod
    async def open(cls, path: Path, *, synchronous: str = "FULL") -> Store:
        """Open (creating and migrating if needed) the database at `path`.

        Raises StoreError with one line naming the file and what to do: a folder in the way,
        a damaged or foreign file, a schema newer than this code.
        """
        if str(path) != ":memory:":
            _prepare_folder(path)
        opened: list[aiosqlite.Connection] = []
        try:
            async with aiosqlite.connect(path, isolation_level=None) as setup:
                await _configure(setup, synchronous)
                await _migrate(setup, path)
                # A truncated file can keep a valid header: read every table's first page.
                await _touch_tables(setup)
            writer = await aiosqlite.connect(path, isolation_level="IMMEDIATE")
            opened.append(writer)
            await _configure(writer, synchronous)
            reader = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
            opened.append(reader)
            await reader.execute("PRAGMA busy_timeout = 2000")
        except BaseException as exc:
            for connection in opened:
                await connection.close()
            if isinstance(exc, sqlite3.Error):
                raise _cannot_open(path, exc) from exc
            raise
        store = cls(writer, reader)
        store._committer = asyncio.create_task(store._commit_loop(), name="store-group-commit")
        return store

    async def close(self) -> None:
        """Finish pending commits and close both connections."""
        if self._committer is not None:
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer
            self._committer = None
        pending_items, self._pending = self._pending, []
        for pending in pending_items:
            if not pending.done.done():
                pending.done.set_exception(StoreError("database closed"))
        await self._reader.close()
        await self._writer.close()

    # --- group commit ---------------------------------------------------------------------

    async def add(self, item: NewInbound | NewStatus) -> None:
        """Durably record a callback; returns once it is committed (a duplicate is a no-op)."""
        if self._committer is None or self._committer.done():
            raise StoreError("database closed")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(item, done))
        self._has_pending.set()
        await done

    async def _commit_loop(self) -> None:
        while True:
            await self._has_pending.wait()
            # Everything that arrived while the previous commit ran goes into this one.
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            if not self._pending:
                self._has_pending.clear()
            try:
                # One timer per batch, not per request: a stalled disk answers 503.
                async with asyncio.timeout(COMMIT_TIMEOUT_SECONDS):
                    await self._commit(batch)
            except asyncio.CancelledError:
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(StoreError("database closed"))
                raise
            except (StoreError, TimeoutError) as exc:
                error = exc if isinstance(exc, StoreError) else StoreError("commit timed out")
                self._write_failed(error)
                log.error("commit of %d callbacks failed: %s", len(batch), error)
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(error)
            else:
                self.batches += 1
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_result(None)

    async def _commit(self, batch: Sequence[_Pending]) -> None:
        inbound = [p.item for p in batch if isinstance(p.item, NewInbound)]
        statuses = [p.item for p in batch if isinstance(p.item, NewStatus)]
        async with self._transaction() as db:
            if inbound:
                await db.executemany(
                    "INSERT INTO intake VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            m.ref_no,
                            m.room_id,
                            m.sender_number,
                            m.number or "+" + m.sender_number.lstrip("+"),
                            m.text,
                            m.inbox_at,
                            m.received_at,
                        )
                        for m in inbound
                    ],
                )
            if statuses:
                await db.executemany(
                    """
                    INSERT INTO status_events (ref_no, status, status_at, received_at)
                    VALUES (?, ?, ?, ?)
                    ON CONFLICT (ref_no, status) DO NOTHING
                    """,
                    [(s.ref_no, s.status, s.status_at, s.received_at) for s in statuses],
                )

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction; any SQLite failure surfaces as StoreError.

        The writer connection begins it implicitly (BEGIN IMMEDIATE) with its first
        statement, which saves a round trip to the database thread per transaction.
        """
        async with self._write_lock:
            try:
                try:
                    yield self._writer
                    await self._writer.commit()
                except BaseException:
                    with contextlib.suppress(sqlite3.Error, ValueError):
                        await self._writer.rollback()
                    raise
            except (sqlite3.Error, ValueError) as exc:
                error = StoreError(f"database write failed: {exc}")
                self._write_failed(error)
                raise error from exc
        self.write_failing = False
        self.last_write_ok_at = time.time()

    def _write_failed(self, error: StoreError) -> None:
        self.write_failing = True
        self.last_write_failed_at = time.time()
        self.last_write_error = str(error)

    async def checkpoint(self) -> tuple[int, int]:
        """Copy the WAL into the database and truncate it; (WAL pages, pages copied).

        Takes the write lock, so it waits for a commit in progress instead of failing; a
        reader still busy with an old snapshot makes it copy only part (it is tried again).
        """
        async with self._write_lock:
            try:
                rows = await self._writer.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
            except (sqlite3.Error, ValueError) as exc:
                raise StoreError(f"WAL checkpoint failed: {exc}") from exc
        _busy, pages, copied = next(iter(rows))
        return int(pages), int(copied)

    async def _write(self, sql: str, params: Iterable[Any] = ()) -> int:
        async with self._transaction() as db:
            cursor = await db.execute(sql, tuple(params))
            return cursor.rowcount

    # --- the inbound queue ------------------------------------------------------------------

    async def due_rooms(self, now: float, limit: int, exclude: Iterable[str] = ()) -> list[Room]:
        """Rooms with waiting messages whose backoff has passed, in the order of the line.

        A room joins the line when its oldest waiting message arrived, and again at the back
        after each post it got: one post per turn, so a room with many parts waiting cannot
        keep the group's budget while a one-line message of another customer waits. Rooms
        in `exclude` (being served, or held in memory) are left out.
        """
        rows = await self._fetch(
            f"""
            SELECT {_ROOM_COLUMNS} FROM (
                SELECT room_id, min(id) AS head, received_at FROM inbound
                WHERE posted_at IS NULL GROUP BY room_id
            ) AS w JOIN rooms USING (room_id)
            WHERE next_attempt_at <= ? AND room_id NOT IN (SELECT value FROM json_each(?))
            ORDER BY max(w.received_at, rooms.last_post_at), w.head LIMIT ?
            """,  # noqa: S608 - only our own column list is interpolated
            (now, json.dumps(sorted(exclude)), limit),
        )
        return [_room(r) for r in rows]

    async def next_attempt_at(self, busy_rooms: Iterable[str] = ()) -> float | None:
        """The earliest time a waiting room not being served right now may be tried."""
        rows = await self._fetch(
            """
            SELECT min(next_attempt_at) FROM rooms
            WHERE room_id IN (SELECT DISTINCT room_id FROM inbound WHERE posted_at IS NULL)
              AND room_id NOT IN (SELECT value FROM json_each(?))
            """,
            (json.dumps(sorted(busy_rooms)),),
        )
        return rows[0][0] if rows else None

    async def waiting(self, room_id: str, limit: int) -> list[Inbound]:
        """The room's waiting messages, in order."""
        rows = await self._fetch(
            """
            SELECT id, ref_no, room_id, text, inbox_at, received_at, parts_done FROM inbound
            WHERE room_id = ? AND posted_at IS NULL ORDER BY id LIMIT ?
            """,
            (room_id, limit),
        )
        return [Inbound(*r) for r in rows]

    async def room(self, room_id: str) -> Room | None:
        """One room, or None."""
        rows = await self._fetch(
            f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE room_id = ?",  # noqa: S608
            (room_id,),
        )
        return _room(rows[0]) if rows else None

    async def room_by_topic(self, topic_id: int) -> Room | None:
        """The room whose topic this is (or an older topic of the customer's), or None."""
        rows = await self._fetch(
            f"""
            SELECT {_ROOM_COLUMNS} FROM rooms WHERE topic_id = ?1
               OR room_id = (SELECT room_id FROM topic_aliases WHERE topic_id = ?1)
            ORDER BY topic_id = ?1 DESC LIMIT 1
            """,  # noqa: S608
            (topic_id,),
        )
        return _room(rows[0]) if rows else None

    # --- customers ------------------------------------------------------------------------

    async def customer_by_number(self, number: str, channel: str = "wa_official") -> Room | None:
        """The customer's conversation (their one topic) for a number on a channel, or None."""
        rows = await self._fetch(
            f"""
            SELECT {_ROOM_COLUMNS} FROM rooms WHERE number = ? AND channel = ?
            ORDER BY created_at DESC LIMIT 1
            """,  # noqa: S608
            (number, channel),
        )
        return _room(rows[0]) if rows else None

    async def add_customer(self, number: str, name: str | None, now: float) -> Room:
        """The customer of `number`, created (window closed, no room yet) if new."""
        async with self._transaction() as db:
            await db.execute(
                """
                INSERT INTO rooms (room_id, sender_number, number, name, last_inbox_at,
                                   created_at)
                SELECT ?1, ltrim(?2, '+'), ?2, ?3, 0, ?4
                WHERE NOT EXISTS (SELECT 1 FROM rooms WHERE number = ?2)
                ON CONFLICT (room_id) DO NOTHING
                """,
                ("new:" + number, number, name, now),
            )
        room = await self.customer_by_number(number)
        if room is None:  # pragma: no cover - the row was just written
            raise StoreError(f"customer {number} not found after adding it")
        return room

    async def wa_rooms(self, room_key: str) -> list[WaRoom]:
        """Every NusaSMS room of the customer whose conversation `room_key` is, oldest first."""
        rows = await self._fetch(
            """
            SELECT wa_room_id, first_at, last_at FROM wa_rooms WHERE room_id = ?
            ORDER BY first_at, wa_room_id
            """,
            (room_key,),
        )
        return [WaRoom(*r) for r in rows]

    async def alias_notes_due(self) -> list[TopicAlias]:
        """Older topics of a customer whose note pointing to the customer's topic is due."""
        rows = await self._fetch(
            "SELECT topic_id, room_id, note FROM topic_aliases WHERE note = 'due' ORDER BY topic_id"
        )
        return [TopicAlias(*r) for r in rows]

    async def claim_alias_note(self, topic_id: int) -> bool:
        """Mark the note as being posted (committed before the post): never posted twice."""
        changed = await self._write(
            "UPDATE topic_aliases SET note = 'sending' WHERE topic_id = ? AND note = 'due'",
            (topic_id,),
        )
        return changed == 1

    async def alias_note_done(self, topic_id: int, note: str = "done") -> None:
        """The note went out (`done`), or its topic refused it for good (`failed`)."""
        await self._write("UPDATE topic_aliases SET note = ? WHERE topic_id = ?", (note, topic_id))

    async def mark_posted(self, ids: Sequence[int], message_id: int, now: float) -> None:
        """These messages are in Telegram now; the room's failures are forgotten."""
        async with self._transaction() as db:
            await db.executemany(
                "UPDATE inbound SET posted_at = ?, telegram_message_id = ? WHERE id = ?",
                [(now, message_id, i) for i in ids],
            )
            await _room_posted(db, ids[0], now)

    async def mark_part_posted(
        self, inbound_id: int, parts_done: int, now: float | None = None
    ) -> None:
        """Remember how far a split message got, so a restart resumes instead of repeating."""
        async with self._transaction() as db:
            await db.execute(
                "UPDATE inbound SET parts_done = ? WHERE id = ?", (parts_done, inbound_id)
            )
            if now is not None:
                await _room_posted(db, inbound_id, now)

    async def mark_refused(
        self, ids: Sequence[int], reason: str, notice_id: int | None, now: float
    ) -> None:
        """Telegram refused these messages for good: kept with the reason, out of the queue."""
        async with self._transaction() as db:
            await db.executemany(
                "UPDATE inbound SET posted_at = ?, telegram_message_id = ?, refused = ? "
                "WHERE id = ?",
                [(now, notice_id, reason[:500], i) for i in ids],
            )
            await _room_posted(db, ids[0], now)

    async def set_closed(self, room_id: str, closed: bool) -> None:
        """An operator closed the room's topic (or the bridge reopened it)."""
        await self._write("UPDATE rooms SET closed = ? WHERE room_id = ?", (int(closed), room_id))

    async def set_topic(self, room_id: str, topic_id: int | None) -> None:
        """Bind the room to a (new, open) topic, which then needs its header."""
        await self._write(
            "UPDATE rooms SET topic_id = ?, header_pending = 1, closed = 0 WHERE room_id = ?",
            (topic_id, room_id),
        )

    async def header_posted(self, room_id: str) -> None:
        """The topic's header is in place."""
        await self._write("UPDATE rooms SET header_pending = 0 WHERE room_id = ?", (room_id,))

    async def room_failed(self, room_id: str, next_attempt_at: float, error: str) -> None:
        """Posting to this room failed; try again later."""
        await self._write(
            """
            UPDATE rooms SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?
            WHERE room_id = ?
            """,
            (next_attempt_at, error[:500], room_id),
        )

    async def queue_stats(self) -> QueueStats:
        """Depth and age of the inbound queue."""
        rows = await self._fetch(
            """
            SELECT count(*), count(DISTINCT room_id), min(received_at)
            FROM inbound WHERE posted_at IS NULL
            """
        )
        failing = await self._fetch("SELECT count(*) FROM rooms WHERE attempts > 0")
        waiting, rooms_waiting, oldest = rows[0]
        return QueueStats(waiting, rooms_waiting, oldest, failing[0][0])

    # --- the outbound queue (operators' replies) -------------------------------------------

    async def add_reply(self, reply: NewReply, now: float) -> int | None:
        """Queue a reply; None if this Telegram message was queued before."""
        async with self._transaction() as db:
            cursor = await db.execute(
                """
                INSERT INTO outbound (room_id, operator_message_id, operator_id, kind, text,
                                      file_id, file_name, file_mime, template, created_at,
                                      queued_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (operator_message_id) DO NOTHING
                """,
                (
                    reply.room_id,
                    reply.operator_message_id,
                    reply.operator_id,
                    reply.kind,
                    reply.text,
                    reply.file_id,
                    reply.file_name,
                    reply.file_mime,
                    reply.template,
                    now,
                    now,
                ),
            )
            return cursor.lastrowid if cursor.rowcount else None

    async def reply(self, reply_id: int) -> Reply | None:
        """One reply, or None."""
        rows = await self._fetch(
            f"SELECT {_REPLY_COLUMNS} FROM outbound WHERE id = ?",  # noqa: S608
            (reply_id,),
        )
        return Reply(*rows[0]) if rows else None

    async def reply_to_message(self, operator_message_id: int) -> Reply | None:
        """The reply an operator's Telegram message became, or None."""
        rows = await self._fetch(
            f"SELECT {_REPLY_COLUMNS} FROM outbound WHERE operator_message_id = ?",  # noqa: S608
            (operator_message_id,),
        )
        return Reply(*rows[0]) if rows else None

    async def due_replies(
        self, now: float, limit: int, unavailable: Iterable[str] = ()
    ) -> list[Reply]:
        """The head reply of every room whose backoff has passed, oldest first.

        Rooms in `unavailable` (a turn running, or held in memory) are left out.
        """
        rows = await self._fetch(
            f"""
            SELECT {_REPLY_COLUMNS} FROM outbound WHERE id IN (
                SELECT min(id) FROM outbound WHERE state = 'queued' GROUP BY room_id
            ) AND next_attempt_at <= ? AND room_id NOT IN (SELECT value FROM json_each(?))
              AND {_NOT_BEHIND_PENDING}
            ORDER BY id LIMIT ?
            """,  # noqa: S608
            (now, json.dumps(sorted(unavailable)), limit),
        )
        return [Reply(*r) for r in rows]

    async def next_reply_attempt_at(self, busy_rooms: Iterable[str] = ()) -> float | None:
        """When the earliest room head may be tried, leaving out rooms with a reply in flight.

        Only a room's first waiting reply counts: the ones behind it were never tried (their
        time is 0) and must wait for it, as must a busy room's, or the worker would spin.
        """
        rows = await self._fetch(
            f"""
            SELECT min(next_attempt_at) FROM outbound WHERE id IN (
                SELECT min(id) FROM outbound WHERE state = 'queued' GROUP BY room_id
            ) AND room_id NOT IN (SELECT value FROM json_each(?)) AND {_NOT_BEHIND_PENDING}
            """,  # noqa: S608
            (json.dumps(sorted(busy_rooms)),),
        )
        return rows[0][0] if rows else None

    async def mark_waiting_replies(self, queued_before: float) -> float | None:
        """Replies queued before `queued_before` and still unsent are shown as waiting.

        Each reply is marked once (until it is queued again); returns when the earliest
        reply not yet marked was queued, or None if there is none.
        """
        async with self._transaction() as db:
            await db.execute(
                """
                UPDATE outbound SET display = 'waiting'
                WHERE state = 'queued' AND display = 'queued' AND queued_at <= ?
                """,
                (queued_before,),
            )
            cursor = await db.execute(
                "SELECT min(queued_at) FROM outbound WHERE state = 'queued' AND display = 'queued'"
            )
            row = await cursor.fetchone()
        return None if row is None else row[0]

    async def update_reply(self, reply_id: int, **fields: Any) -> None:
        """Set some columns of one reply (names are ours, never user input)."""
        columns = ", ".join(f"{name} = ?" for name in fields)
        await self._write(
            f"UPDATE outbound SET {columns} WHERE id = ?",  # noqa: S608
            (*fields.values(), reply_id),
        )

    async def interrupted_replies(self) -> list[Reply]:
        """Replies that were in flight when the process stopped."""
        rows = await self._fetch(
            f"SELECT {_REPLY_COLUMNS} FROM outbound WHERE state = 'sending'"  # noqa: S608
        )
        return [Reply(*r) for r in rows]

    async def feedback_due(self, limit: int) -> list[Reply]:
        """Replies whose state the operator has not been shown yet."""
        rows = await self._fetch(
            f"SELECT {_REPLY_COLUMNS} FROM outbound WHERE display != shown "  # noqa: S608
            "ORDER BY id LIMIT ?",
            (limit,),
        )
        return [Reply(*r) for r in rows]

    async def mark_shown(self, reply_id: int, display: str) -> None:
        """The operator now sees `display`, unless the state moved on meanwhile."""
        await self._write(
            "UPDATE outbound SET shown = ? WHERE id = ? AND display = ?",
            (display, reply_id, display),
        )

    async def requeue_reply(self, reply_id: int, now: float | None = None) -> bool:
        """Retry a failed or unknown reply; False if it is not in such a state.

        It waits from `now` (the database's clock if not given) as if queued anew.
        """
        changed = await self._write(
            """
            UPDATE outbound SET state = 'queued', attempts = 0, next_attempt_at = 0,
                ref_no = NULL, status = NULL, error = NULL, display = 'queued', shown = 'queued',
                queued_at = coalesce(?, CAST(strftime('%s', 'now') AS REAL))
            WHERE id = ? AND display IN ('failed', 'unknown')
            """,
            (now, reply_id),
        )
        return changed > 0

    async def purge_orphan_statuses(self, received_before: float, limit: int) -> int:
        """Forget up to `limit` status events received before then for a ref_no no reply has.

        NusaSMS reports statuses of messages sent from elsewhere (its dashboard, another
        integration) too; they would otherwise be kept, unapplied, forever.
        """
        return await self._write(
            """
            DELETE FROM status_events WHERE id IN (
                SELECT e.id FROM status_events AS e
                WHERE e.applied = 0 AND e.received_at < ?
                  AND NOT EXISTS (SELECT 1 FROM outbound AS o WHERE o.ref_no = e.ref_no)
                ORDER BY e.id LIMIT ?
            )
            """,
            (received_before, limit),
        )

    async def pending_statuses(self, limit: int = 500) -> list[PendingStatus]:
        """Status events whose reply is known, not yet applied, oldest first."""
        rows = await self._fetch(
            """
            SELECT e.id, e.status, o.id, o.status FROM status_events AS e
            JOIN outbound AS o ON o.ref_no = e.ref_no
            WHERE e.applied = 0 ORDER BY e.id LIMIT ?
            """,
            (limit,),
        )
        return [PendingStatus(*r) for r in rows]

    async def apply_statuses(
        self, event_ids: Sequence[int], replies: Sequence[tuple[int, str, str, str | None]]
    ) -> None:
        """Mark events applied and set (reply id, status, display, error) in one transaction."""
        async with self._transaction() as db:
            await db.executemany(
                "UPDATE status_events SET applied = 1 WHERE id = ?", [(i,) for i in event_ids]
            )
            await db.executemany(
                """
                UPDATE outbound SET status = ?, display = ?, error = coalesce(?, error)
                WHERE id = ?
                """,
                [(status, display, error, rid) for rid, status, display, error in replies],
            )

    async def add_pending_reply(
        self, reply: NewReply, now: float, *, reopen: NewReply | None = None, window: float = 0.0
    ) -> tuple[int | None, bool]:
        """Keep a reply written into a closed window as pending; (its id, reopen queued).

        `reopen`, a template message, is queued with it in the same transaction unless one
        was sent by the bridge for this window (`window`: the room's last_inbox_at) already,
        so a crash or a repeated update never sends it twice. None: queued before.
        """
        async with self._transaction() as db:
            cursor = await db.execute(
                """
                INSERT INTO outbound (room_id, operator_message_id, operator_id, kind, text,
                                      file_id, file_name, file_mime, created_at, queued_at,
                                      state, display, shown)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 'pending', 'queued')
                ON CONFLICT (operator_message_id) DO NOTHING
                """,
                (
                    reply.room_id,
                    reply.operator_message_id,
                    reply.operator_id,
                    reply.kind,
                    reply.text,
                    reply.file_id,
                    reply.file_name,
                    reply.file_mime,
                    now,
                    now,
                ),
            )
            if not cursor.rowcount:
                return None, False
            reply_id = cursor.lastrowid
            if reopen is None:
                return reply_id, False
            claimed = await db.execute(
                "UPDATE rooms SET reopen_sent_for = ? WHERE room_id = ? "
                "AND (reopen_sent_for IS NULL OR reopen_sent_for < ?)",
                (window, reply.room_id, window),
            )
            if not claimed.rowcount:
                return reply_id, False
            await db.execute(
                """
                INSERT INTO outbound (room_id, operator_message_id, operator_id, kind, text,
                                      template, created_at, queued_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """,
                (
                    reopen.room_id,
                    reopen.operator_message_id,
                    reopen.operator_id,
                    reopen.kind,
                    reopen.text,
                    reopen.template,
                    now,
                    now,
                ),
            )
            return reply_id, True

    async def expire_pending(self, created_before: float, error: str) -> int:
        """Pending replies kept since before then are dropped (the operator is told why)."""
        return await self._write(
            "UPDATE outbound SET state = 'expired', display = 'expired', error = ? "
            "WHERE state = 'pending' AND created_at < ?",
            (error, created_before),
        )

    async def release_pending(self, now: float, window_seconds: float) -> int:
        """Pending replies of rooms whose window is open again are queued, in their order."""
        return await self._write(
            """
            UPDATE outbound SET state = 'queued', display = 'queued', queued_at = ?
            WHERE state = 'pending' AND room_id IN (
                SELECT room_id FROM rooms WHERE last_inbox_at + ? >= ?
            )
            """,
            (now, window_seconds, now),
        )

    async def oldest_pending_at(self) -> float | None:
        """When the oldest pending reply was written, or None."""
        rows = await self._fetch("SELECT min(created_at) FROM outbound WHERE state = 'pending'")
        return rows[0][0] if rows else None

    async def templates_to_post(self, limit: int) -> list[Reply]:
        """Template messages whose rendered text is not shown in their topic yet."""
        rows = await self._fetch(
            f"SELECT {_REPLY_COLUMNS} FROM outbound "  # noqa: S608
            "WHERE kind = 'template' AND post_message_id IS NULL ORDER BY id LIMIT ?",
            (limit,),
        )
        return [Reply(*r) for r in rows]

    async def template_posted(self, reply_id: int, message_id: int) -> None:
        """The template's rendered text is shown in its topic as `message_id`."""
        await self._write(
            "UPDATE outbound SET post_message_id = ? WHERE id = ?", (message_id, reply_id)
        )

    async def templates_sent(self, start: float, end: float, room_id: str | None = None) -> int:
        """Templates NusaSMS accepted in [start, end), of one room or of all."""
        rows = await self._fetch(
            """
            SELECT count(*) FROM outbound
            WHERE kind = 'template' AND sent_at >= ? AND sent_at < ?
              AND (? IS NULL OR room_id = ?)
            """,
            (start, end, room_id, room_id),
        )
        return int(rows[0][0])

    async def outbound_stats(self) -> tuple[int, float | None]:
        """(replies waiting, creation time of the oldest)."""
        rows = await self._fetch(
            "SELECT count(*), min(created_at) FROM outbound WHERE state IN ('queued', 'sending')"
        )
        return rows[0][0], rows[0][1]

    # --- media served to NusaSMS ------------------------------------------------------------

    async def add_media(self, media: MediaFile) -> None:
        """Remember a published file."""
        await self._write(
            "INSERT INTO media (token, path, content_type, filename, expires_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (media.token, media.path, media.content_type, media.filename, media.expires_at),
        )

    async def media(self, token: str) -> MediaFile | None:
        """A published file by token, or None."""
        rows = await self._fetch(
            "SELECT token, path, content_type, filename, expires_at FROM media WHERE token = ?",
            (token,),
        )
        return MediaFile(*rows[0]) if rows else None

    async def expired_media(self, now: float) -> list[MediaFile]:
        """Files whose links have expired."""
        rows = await self._fetch(
            "SELECT token, path, content_type, filename, expires_at FROM media "
            "WHERE expires_at <= ?",
            (now,),
        )
        return [MediaFile(*r) for r in rows]

    async def forget_media(self, tokens: Sequence[str]) -> None:
        """Drop expired files' records."""
        async with self._transaction() as db:
            await db.executemany("DELETE FROM media WHERE token = ?", [(t,) for t in tokens])

    # --- facts and alert episodes ---------------------------------------------------------

    async def fact(self, key: str) -> str | None:
        """A remembered value (e.g. the Alerts topic's id), or None."""
        rows = await self._fetch("SELECT value FROM facts WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def set_fact(self, key: str, value: str | None) -> None:
        """Remember (or forget, with None) a value."""
        if value is None:
            await self._write("DELETE FROM facts WHERE key = ?", (key,))
        else:
            await self._write(
                "INSERT INTO facts (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    async def alert(self, key: str) -> AlertState | None:
        """The current episode of one alert, or None if it never fired."""
        rows = await self._fetch(
            "SELECT key, active, since, last_sent_at, detail FROM alerts WHERE key = ?", (key,)
        )
        return AlertState(rows[0][0], bool(rows[0][1]), *rows[0][2:]) if rows else None

    async def save_alert(self, state: AlertState) -> None:
        """Store an alert episode."""
        await self._write(
            """
            INSERT INTO alerts (key, active, since, last_sent_at, detail) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (key) DO UPDATE SET active = excluded.active, since = excluded.since,
                last_sent_at = excluded.last_sent_at, detail = excluded.detail
            """,
            (state.key, int(state.active), state.since, state.last_sent_at, state.detail),
        )

    # --- the reply window -------------------------------------------------------------------

    async def rooms_to_remind(self, start: float, end: float) -> list[Room]:
        """Rooms whose customer wrote last in [start, end), unanswered since, not reminded."""
        rows = await self._fetch(
            f"""
            SELECT {_ROOM_COLUMNS} FROM rooms AS r
            WHERE last_inbox_at >= ? AND last_inbox_at < ? AND topic_id IS NOT NULL
              AND NOT closed AND reminded_for IS NOT last_inbox_at
              AND NOT EXISTS (SELECT 1 FROM outbound AS o WHERE o.room_id = r.room_id
                              AND o.created_at >= r.last_inbox_at)
            """,  # noqa: S608
            (start, end),
        )
        return [_room(r) for r in rows]

    async def rooms_just_closed(self, start: float, end: float) -> list[Room]:
        """Rooms whose customer wrote last in [start, end) without a closed-window notice yet."""
        rows = await self._fetch(
            f"""
            SELECT {_ROOM_COLUMNS} FROM rooms
            WHERE last_inbox_at >= ? AND last_inbox_at < ? AND topic_id IS NOT NULL
              AND NOT closed AND closed_notice_for IS NOT last_inbox_at
            """,  # noqa: S608
            (start, end),
        )
        return [_room(r) for r in rows]

    async def window_noted(self, room_id: str, column: str, last_inbox_at: float) -> None:
        """Remember a reminder or closed notice for this customer message."""
        if column not in ("reminded_for", "closed_notice_for"):
            raise ValueError(column)
        await self._write(
            f"UPDATE rooms SET {column} = ? WHERE room_id = ?",  # noqa: S608
            (last_inbox_at, room_id),
        )

    async def room_counts(self, room_id: str) -> tuple[int, int, str | None]:
        """(messages in, replies out, the last reply's status) of one room."""
        inbound = await self._fetch("SELECT count(*) FROM inbound WHERE room_id = ?", (room_id,))
        outbound = await self._fetch(
            "SELECT count(*), (SELECT coalesce(status, state) FROM outbound "
            "WHERE room_id = ? ORDER BY id DESC LIMIT 1) FROM outbound WHERE room_id = ?",
            (room_id, room_id),
        )
        return inbound[0][0], outbound[0][0], outbound[0][1]

    # --- data retention -------------------------------------------------------------------

    async def prune_bounds(self, cutoff: float) -> tuple[int, ...]:
        """Per prunable table, the first id at or after `cutoff` (every id below is older).

        Ids grow with time, so this bounds a primary-key range for `prune`: no index to keep
        up on the intake path, and rows younger than `cutoff` are never touched. It reads
        on the read connection, once per sweep, so the writer is not held while it scans.
        """
        bounds = []
        for table, column, _ in _PRUNABLE:
            rows = await self._fetch(
                f"SELECT id FROM {table} WHERE {column} >= ? ORDER BY id LIMIT 1",  # noqa: S608
                (cutoff,),
            )
            bounds.append(rows[0][0] if rows else _MAX_ID)
        return tuple(bounds)

    async def prune(self, bounds: Sequence[int], cutoff: float, limit: int) -> Pruned:
        """Delete up to `limit` rows per table below its bound that the bridge is done with.

        Done with: an inbound message posted to Telegram, a reply in a final state whose
        feedback the operator has seen, a status event applied or for no reply we know.
        Rooms stay (they hold the customer's topic).
        """
        counts = []
        async with self._transaction() as db:
            for (table, column, done), bound in zip(_PRUNABLE, bounds, strict=True):
                cursor = await db.execute(
                    f"""
                    DELETE FROM {table} WHERE id IN (
                        SELECT id FROM {table} WHERE id < ? AND {column} < ? AND {done}
                        ORDER BY id LIMIT ?
                    )
                    """,  # noqa: S608 - only our own table and column names are interpolated
                    (bound, cutoff, limit),
                )
                counts.append(cursor.rowcount)
        return Pruned(*counts)

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return list(await self._reader.execute_fetchall(sql, params))

    # --- operators' Telegram updates ---------------------------------------------------------

    async def add_updates(self, updates: Sequence[tuple[int, str]], now: float) -> None:
        """Durably record raw updates (update_id, JSON) in one commit; a known id is dropped."""
        if not updates:
            return
        async with self._transaction() as db:
            await db.executemany(
                """
                INSERT INTO telegram_updates (update_id, raw, received_at) VALUES (?, ?, ?)
                ON CONFLICT (update_id) DO NOTHING
                """,
                [(update_id, raw, now) for update_id, raw in updates],
            )

    async def pending_updates(self, limit: int = 100) -> list[tuple[int, str]]:
        """Stored updates not handled yet, in update_id order."""
        rows = await self._fetch(
            "SELECT update_id, raw FROM telegram_updates WHERE done_at IS NULL "
            "ORDER BY update_id LIMIT ?",
            (limit,),
        )
        return [(int(r[0]), str(r[1])) for r in rows]

    async def update_done(self, update_id: int, now: float) -> None:
        """An update's handlers have run."""
        await self._write(
            "UPDATE telegram_updates SET done_at = ? WHERE update_id = ?", (now, update_id)
        )

    async def last_update_id(self) -> int | None:
        """The highest update_id ever stored, or None."""
        rows = await self._fetch("SELECT max(update_id) FROM telegram_updates")
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    async def ping(self) -> None:
        """Raise if the database cannot be read."""
        await self._fetch("SELECT 1 FROM rooms LIMIT 1")


async def _room_posted(db: aiosqlite.Connection, inbound_id: int, now: float) -> None:
    """A post went into the room's topic: its failures are forgotten, its turn is over."""
    await db.execute(
        """
        UPDATE rooms SET attempts = 0, last_error = NULL, next_attempt_at = 0, last_post_at = ?
        WHERE room_id = (SELECT room_id FROM inbound WHERE id = ?)
        """,
        (now, inbound_id),
    )


async def _configure(db: aiosqlite.Connection, synchronous: str) -> None:
    mode = await db.execute_fetchall("PRAGMA journal_mode = WAL")
    if next(iter(mode))[0].lower() != "wal":
        raise StoreError(
            "the database does not support WAL (a network file system?)", fix=_FIX_PATH
        )
    await db.execute(f"PRAGMA synchronous = {'FULL' if synchronous == 'FULL' else 'NORMAL'}")
    await db.execute("PRAGMA foreign_keys = ON")
    # A locked database must answer callbacks 503 quickly, not hang the request.
    await db.execute("PRAGMA busy_timeout = 2000")


async def _touch_tables(db: aiosqlite.Connection) -> None:
    tables = await db.execute_fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
    for (table,) in tables:
        # Names from sqlite_master: our own schema's tables.
        await db.execute_fetchall(f'SELECT 1 FROM "{table}" LIMIT 1')  # noqa: S608


async def _migrate(db: aiosqlite.Connection, path: Path | str = "") -> None:
    rows = await db.execute_fetchall("PRAGMA user_version")
    version = next(iter(rows))[0]
    if version > len(MIGRATIONS):
        raise _too_new(path, version)
    for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
        log.info("migrating database to schema version %d", number)
        await db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(step):
                await db.execute(statement)
            await db.execute(f"PRAGMA user_version = {number}")
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise


def _statements(script: str) -> list[str]:
    """Split a migration into statements (a trigger's body holds semicolons too)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
