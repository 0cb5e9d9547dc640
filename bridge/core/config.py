"""The bridge's configuration: one YAML file, three secrets overridable from the environment.

Every key is validated once, at start-up. Unknown keys (typos) and placeholder values are
refused with a message that names the key, so a misconfigured bridge never half-starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

# The secrets may come from the environment (containers, systemd credentials).
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "NUSASMS_API_KEY": ("nusasms", "api_key"),
    "TELEGRAM_BOT_TOKEN": ("telegram", "bot_token"),
    "BRIDGE_CALLBACK_SECRET": ("server", "callback_secret"),
    "BRIDGE_ADMIN_TOKEN": ("server", "admin_token"),
}

# Values copied from config.example.yaml that a real deployment must change.
_PLACEHOLDER_CHAT_ID = -1001234567890


# What to do about a problem in the file (a variable's problem names the variable instead).
FIX_FILE = "edit the file (config.example.yaml documents every key)"


class ConfigError(Exception):
    """The configuration file (or a secret from the environment) is missing or invalid."""

    def __init__(self, message: str, *, fix: str = FIX_FILE) -> None:
        super().__init__(message)
        self.fix = fix


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _require_secret(value: SecretStr, env: str) -> SecretStr:
    if not value.get_secret_value().strip():
        raise ValueError(f"must be set (in the file or with the {env} environment variable)")
    return value


class NusaSMSSettings(_Section):
    """How to reach the NusaSMS API."""

    api_key: SecretStr = SecretStr("")
    base_url: str = "https://api.nusasms.com/nusasms_api/1.0"
    timezone: str = "Asia/Jakarta"
    request_timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    # url: NusaSMS fetches media from <server.public_url>/media/<token>; upload: multipart.
    media_mode: Literal["url", "upload"] = "url"
    media_ttl_hours: float = Field(default=24.0, gt=0, le=24 * 30)
    # The channel templates are sent with when the account has several (one: that one).
    channel_id: str | None = None

    @field_validator("api_key")
    @classmethod
    def _api_key_set(cls, value: SecretStr) -> SecretStr:
        return _require_secret(value, "NUSASMS_API_KEY")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from exc
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _http_url(value)

    @property
    def tz(self) -> ZoneInfo:
        """The zone NusaSMS writes `inbox_date` and `status_date` in."""
        return ZoneInfo(self.timezone)


class GroupBudgetSettings(_Section):
    """Telegram lets a bot post about 20 messages a minute into one group, all topics together."""

    messages: int = Field(default=20, ge=1)
    seconds: float = Field(default=60.0, gt=0)


class TelegramSettings(_Section):
    """The bot and the forum supergroup it serves."""

    bot_token: SecretStr = SecretStr("")
    chat_id: int
    api_base_url: str = "https://api.telegram.org/bot"
    api_file_url: str = "https://api.telegram.org/file/bot"
    operator_ids: tuple[int, ...] = ()
    group_budget: GroupBudgetSettings = Field(default_factory=lambda: GroupBudgetSettings())
    # Messages starting with this stay in Telegram (notes between operators).
    note_prefix: str = "//"
    # What the bot says in the group: English or Bahasa Indonesia (logs stay English).
    language: Literal["en", "id"] = "en"
    # How operators' updates arrive: polling (getUpdates, works behind NAT) or webhook
    # (Telegram POSTs to <server.public_url>/telegram/<secret>). Both store before confirming.
    updates: Literal["polling", "webhook"] = "polling"

    @field_validator("bot_token")
    @classmethod
    def _token_set(cls, value: SecretStr) -> SecretStr:
        value = _require_secret(value, "TELEGRAM_BOT_TOKEN")
        if ":" not in value.get_secret_value():
            raise ValueError("does not look like a bot token (expected '<digits>:<secret>')")
        return value

    @field_validator("chat_id")
    @classmethod
    def _real_group(cls, value: int) -> int:
        if value == _PLACEHOLDER_CHAT_ID:
            raise ValueError("is still the example value; put your forum group's id here")
        if value >= 0:
            raise ValueError("must be a group id (negative, usually starting with -100)")
        return value

    @field_validator("api_base_url", "api_file_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _http_url(value)


class ServerSettings(_Section):
    """The HTTP server NusaSMS calls back."""

    host: str = "0.0.0.0"  # noqa: S104 - the callback server must be reachable from outside
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str = "http://localhost:8080"
    callback_secret: SecretStr = SecretStr("")
    # Where /healthz and /metrics are served: "host:port" (a listener of their own, never
    # to be published), or "public": on `port` beside the callbacks, only with admin_token.
    admin: str = "127.0.0.1:9090"
    # A bearer token for /healthz and /metrics; required with admin: public, optional (but
    # then required of every client) on an admin listener of their own.
    admin_token: SecretStr = Field(default=SecretStr(""), validate_default=True)

    @field_validator("admin")
    @classmethod
    def _admin_address(cls, value: str, info: ValidationInfo) -> str:
        if value == ADMIN_PUBLIC:
            return value
        _host, port = parse_address(value)
        if port != 0 and port == info.data.get("port"):
            raise ValueError(
                f"port {port} is server.port: give the admin endpoints another port, "
                f"or write {ADMIN_PUBLIC!r} to serve them there behind admin_token"
            )
        return value

    @field_validator("admin_token")
    @classmethod
    def _admin_token(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        token = value.get_secret_value()
        if not token and info.data.get("admin") == ADMIN_PUBLIC:
            raise ValueError(
                f"must be set when server.admin is {ADMIN_PUBLIC!r} (in the file or with "
                "the BRIDGE_ADMIN_TOKEN environment variable)"
            )
        if token and len(token) < 16:
            raise ValueError("must be at least 16 characters")
        if any(c.isspace() or not c.isprintable() for c in token):
            raise ValueError("may not hold spaces or control characters (it is an HTTP header)")
        return value

    @property
    def admin_listen(self) -> tuple[str, int] | None:
        """(host, port) of the admin listener, or None when the public port serves them."""
        return None if self.admin == ADMIN_PUBLIC else parse_address(self.admin)

    @field_validator("callback_secret")
    @classmethod
    def _secret_strong(cls, value: SecretStr) -> SecretStr:
        value = _require_secret(value, "BRIDGE_CALLBACK_SECRET")
        secret = value.get_secret_value()
        if len(secret) < 16:
            raise ValueError("must be at least 16 characters (it is the only guard on callbacks)")
        if any(not (c.isalnum() or c in "-_.~") for c in secret):
            raise ValueError("may only hold letters, digits and - _ . ~ (it is part of a URL)")
        return value

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if "bridge.example.com" in value:
            # NusaSMS fetches operators' files from here: a placeholder loses every file.
            raise ValueError("is still the example value; put this server's public address here")
        return _http_url(value)


ADMIN_PUBLIC = "public"


def parse_address(value: str) -> tuple[str, int]:
    """("host", port) from "host:port" or "[v6]:port"; ValueError naming what is wrong."""
    host, sep, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 address needs brackets: [::1]:9090")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"must be host:port (e.g. 127.0.0.1:9090) or {ADMIN_PUBLIC!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError("the port must be at most 65535")
    return host, port


class StorageSettings(_Section):
    """Where the SQLite database lives and how hard it syncs.

    Relative paths are taken from the configuration file's folder, not the current directory
    (`load_settings` makes them absolute), so starting from elsewhere finds the same database.
    """

    path: Path = Path("data/bridge.sqlite3")
    # Files published to NusaSMS in media_mode url; default: "media" beside the database.
    media_dir: Path | None = None
    # FULL: an acknowledged callback survives power loss, not only a crash.
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    # Posted messages, finished replies and status events older than this are deleted; 0 = never.
    retention_days: float = Field(default=90.0, ge=0)

    @property
    def media_path(self) -> Path:
        """Where published media files are kept."""
        return self.media_dir if self.media_dir is not None else self.path.parent / "media"


class ReopenTemplate(_Section):
    """A template that reopens a closed window, with its body values (`{name}`: the customer)."""

    name: str = Field(min_length=1)
    values: list[str] = Field(default_factory=list)


class WindowSettings(_Section):
    """WhatsApp's customer-service window."""

    hours: float = Field(default=24.0, gt=0, le=24 * 7)
    warn_minutes: float = Field(default=60.0, gt=0)
    # Templates offered (one button each) when an operator writes into a closed window; the
    # reply is kept as pending until the customer writes again. Empty: a plain refusal.
    reopen_templates: list[ReopenTemplate] = Field(default_factory=list)
    # Send the first reopen template by itself (once per window per topic).
    auto_reopen: bool = False
    # A pending reply older than this is dropped with a notice, never sent late.
    pending_max_age_hours: float = Field(default=24.0, gt=0)


class AlertSettings(_Section):
    """Balance watching."""

    balance_interval_seconds: float = Field(default=900.0, gt=0)
    thresholds: dict[str, float] = Field(default_factory=lambda: {"wa_balance": 100.0})
    expiry_warning_days: int = Field(default=7, ge=0)
    repeat_hours: float = Field(default=24.0, gt=0)
    # A waiting message older than this is an operational alert.
    stuck_after_minutes: float = Field(default=5.0, gt=0)
    # Post alerts into this existing topic instead of creating an "Alerts" topic.
    topic_id: int | None = None


class HelpdeskSettings(_Section):
    """How the team works: who answers, states, ready answers, signatures, business hours."""

    # first_reply: the first operator who replies is the assignee; manual: Take or /take.
    assignment: Literal["first_reply", "manual"] = "first_reply"
    # Sent to the customer by /close when set ({name}, {operator} placeholders).
    close_message: str = ""
    # A customer silent this many days is closed with a notice; 0: never.
    auto_close_days: float = Field(default=0.0, ge=0)
    # Never more than one topic rename per topic within this many minutes.
    rename_min_minutes: float = Field(default=5.0, ge=0)
    # Ready answers: name -> text ({name}, {operator}); `!name` in a topic sends one.
    canned: dict[str, str] = Field(default_factory=dict)
    # What the customer reads, e.g. "*{operator}*:\n{text}"; empty: the operator's text only.
    signature: str = ""
    # Operators' names on signatures and lists: Telegram user id -> name (else first name).
    operators: dict[int, str] = Field(default_factory=dict)
    # Business hours per weekday (mon..sun), e.g. "08:00-17:00", in nusasms.timezone; a day
    # left out or "" is closed. Empty mapping: always open (no away message).
    hours: dict[str, str] = Field(default_factory=dict)
    holidays: list[date] = Field(default_factory=list)
    # Sent once per conversation to a customer who writes outside business hours.
    away_message: str = ""


class LoggingSettings(_Section):
    """Log verbosity and format."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_lines: bool = Field(default=False, alias="json")
    # One compact line per HTTP request (at INFO), written by a thread of its own, so it
    # costs the intake little (see bench/RESULTS.md) and a slow sink never holds up a 200.
    access_log: bool = True


class Settings(_Section):
    """The whole configuration."""

    nusasms: NusaSMSSettings
    telegram: TelegramSettings
    server: ServerSettings
    storage: StorageSettings = StorageSettings()
    window: WindowSettings = WindowSettings()
    alerts: AlertSettings = AlertSettings()
    helpdesk: HelpdeskSettings = HelpdeskSettings()
    logging: LoggingSettings = LoggingSettings()

    def secrets(self) -> list[str]:
        """Every secret value, for log redaction."""
        return [
            s
            for s in (
                self.nusasms.api_key.get_secret_value(),
                self.telegram.bot_token.get_secret_value(),
                self.server.callback_secret.get_secret_value(),
                self.server.admin_token.get_secret_value(),
            )
            if s
        ]


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, overlay the environment and validate; raise ConfigError with one line per problem.

    Relative storage paths come back absolute, resolved against the file's folder.
    """
    environ = os.environ if environ is None else environ
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path}: file not found (copy config.example.yaml and fill it in)"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        # PyYAML quotes the broken line, which may hold a secret: say where, not what.
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    data: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    # Which keys hold a value from the environment: a bad one is blamed on its variable.
    from_env: dict[tuple[str, str], str] = {}
    for env, (section, key) in ENV_OVERRIDES.items():
        value = environ.get(env)
        if value:
            target = data.setdefault(section, {})
            if isinstance(target, dict):
                target[key] = value
                from_env[(section, key)] = env
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        blamed = [_blame(path, err, from_env) for err in exc.errors()]
        variables = sorted({env for env, _ in blamed if env})
        if variables and all(env for env, _ in blamed):
            fix = f"correct the environment variable {' and '.join(variables)}"
        elif variables:
            fix = f"{FIX_FILE}, and correct the environment variable {' and '.join(variables)}"
        else:
            fix = FIX_FILE
        raise ConfigError("\n".join(line for _, line in blamed), fix=fix) from None
    return _resolve_paths(settings, path.resolve().parent)


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    storage = settings.storage
    if str(storage.path) == ":memory:":
        return settings
    media_dir = storage.media_dir
    storage = storage.model_copy(
        update={
            "path": base / storage.path,
            "media_dir": None if media_dir is None else base / media_dir,
        }
    )
    return settings.model_copy(update={"storage": storage})


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if not isinstance(exc, yaml.MarkedYAMLError):
        return type(exc).__name__
    parts = [
        f"{text} (line {mark.line + 1}, column {mark.column + 1})"
        for text, mark in ((exc.context, exc.context_mark), (exc.problem, exc.problem_mark))
        if text and mark is not None
    ]
    return "; ".join(parts) or type(exc).__name__


def _blame(path: Path, err: Any, from_env: Mapping[tuple[str, str], str]) -> tuple[str, str]:
    """(the environment variable at fault or "", the line describing the problem)."""
    loc = tuple(str(part) for part in err["loc"])
    key = ".".join(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        message = "unknown key (a typo?)"
    elif kind == "missing":
        message = "missing"
    else:
        message = str(err["msg"]).removeprefix("Value error, ")
    # Never echo a rejected value: it might be a secret in the wrong place.
    env = from_env.get((loc[0], loc[1])) if len(loc) == 2 else None
    if env:
        return env, f"environment variable {env} (used for {key}): {message}"
    return "", f"{path}: {key}: {message}"
