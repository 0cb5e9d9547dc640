"""The configuration file: validated once, with one clear line per problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge.core.config import ConfigError, load_settings
from tests.conftest import write_config


def _valid() -> dict[str, Any]:
    return {
        "nusasms": {"api_key": "key-123"},
        "telegram": {"bot_token": "123:abcdefghijklmnopqrstuvwxyz", "chat_id": -1009876543210},
        "server": {"callback_secret": "a-long-callback-secret"},
    }


def test_minimal_config_gets_documented_defaults(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, _valid()), environ={})
    assert settings.nusasms.base_url == "https://api.nusasms.com/nusasms_api/1.0"
    assert settings.nusasms.timezone == "Asia/Jakarta"
    assert settings.server.port == 8080
    assert settings.storage.synchronous == "FULL"
    assert settings.window.hours == 24
    assert settings.alerts.thresholds == {"wa_balance": 100}


def test_example_config_documents_every_key_and_refuses_placeholders(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "config.example.yaml"
    with pytest.raises(ConfigError) as raised:
        load_settings(example, environ={})
    lines = str(raised.value).splitlines()
    assert any("nusasms.api_key" in line for line in lines)
    assert any("telegram.chat_id: is still the example value" in line for line in lines)
    assert any("server.public_url: is still the example value" in line for line in lines)
    for line in example.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and ":" in stripped:
            assert "#" in stripped or stripped.endswith(":"), f"undocumented key: {line}"


def test_environment_overrides_the_three_secrets(tmp_path: Path) -> None:
    data = _valid()
    settings = load_settings(
        write_config(tmp_path, data),
        environ={
            "NUSASMS_API_KEY": "from-env",
            "TELEGRAM_BOT_TOKEN": "999:from-env-token",
            "BRIDGE_CALLBACK_SECRET": "from-env-secret-long",
        },
    )
    assert settings.nusasms.api_key.get_secret_value() == "from-env"
    assert settings.telegram.bot_token.get_secret_value() == "999:from-env-token"
    assert settings.server.callback_secret.get_secret_value() == "from-env-secret-long"
    assert "from-env" not in repr(settings)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["telegram"].update(chat_idd=1), "telegram.chat_idd: unknown key (a typo?)"),
        (lambda d: d["telegram"].pop("chat_id"), "telegram.chat_id: missing"),
        (lambda d: d["nusasms"].update(timezone="Mars/Base"), "nusasms.timezone: unknown time"),
        (lambda d: d["server"].update(port="eighty"), "server.port:"),
        (lambda d: d["server"].update(callback_secret="short"), "at least 16 characters"),
        (lambda d: d.update(extra={}), "extra: unknown key"),
    ],
)
def test_bad_value_is_named_in_one_line(tmp_path: Path, change: Any, expected: str) -> None:
    data = _valid()
    change(data)
    with pytest.raises(ConfigError) as raised:
        load_settings(write_config(tmp_path, data), environ={})
    message = str(raised.value)
    assert expected in message
    assert len(message.splitlines()) == 1


def test_cli_prints_config_error_without_traceback(tmp_path: Path) -> None:
    data = _valid()
    data["telegram"]["chat_idd"] = 5
    path = write_config(tmp_path, data)
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip() == f"config error: {path}: telegram.chat_idd: unknown key (a typo?)"
    )


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"file not found \(copy config.example.yaml"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_a_bad_secret_from_the_environment_is_blamed_on_its_variable(tmp_path: Path) -> None:
    path = write_config(tmp_path, _valid())
    with pytest.raises(ConfigError) as raised:
        load_settings(path, environ={"TELEGRAM_BOT_TOKEN": "no-colon-in-this-token"})
    message = str(raised.value)
    assert message == (
        "environment variable TELEGRAM_BOT_TOKEN (used for telegram.bot_token): does not look "
        "like a bot token (expected '<digits>:<secret>')"
    )
    assert str(path) not in message
    assert raised.value.fix == "correct the environment variable TELEGRAM_BOT_TOKEN"
    assert "no-colon-in-this-token" not in message


def test_a_bad_secret_in_the_file_is_still_blamed_on_the_file(tmp_path: Path) -> None:
    data = _valid()
    data["server"]["callback_secret"] = "short"
    path = write_config(tmp_path, data)
    with pytest.raises(ConfigError) as raised:
        load_settings(path, environ={"TELEGRAM_BOT_TOKEN": "no-colon-in-this-token"})
    lines = str(raised.value).splitlines()
    assert f"{path}: server.callback_secret: must be at least 16 characters" in lines[1]
    assert lines[0].startswith("environment variable TELEGRAM_BOT_TOKEN ")
    assert "edit the file" in raised.value.fix
    assert "TELEGRAM_BOT_TOKEN" in raised.value.fix


def test_relative_storage_paths_are_taken_from_the_config_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _valid()
    data["storage"] = {"path": "state/bridge.sqlite3", "media_dir": "files"}
    folder = tmp_path / "etc"
    folder.mkdir()
    path = write_config(folder, data)
    monkeypatch.chdir(tmp_path)
    settings = load_settings(Path("etc") / path.name, environ={})
    assert settings.storage.path == folder / "state" / "bridge.sqlite3"
    assert settings.storage.media_path == folder / "files"


def test_the_default_database_and_media_live_beside_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, _valid())
    monkeypatch.chdir("/")
    settings = load_settings(path, environ={})
    assert settings.storage.path == tmp_path / "data" / "bridge.sqlite3"
    assert settings.storage.media_path == tmp_path / "data" / "media"


def test_an_absolute_storage_path_is_kept(tmp_path: Path) -> None:
    data = _valid()
    data["storage"] = {"path": "/var/lib/bridge/bridge.sqlite3"}
    settings = load_settings(write_config(tmp_path, data), environ={})
    assert settings.storage.path == Path("/var/lib/bridge/bridge.sqlite3")
