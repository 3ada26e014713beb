"""Settings from defaults, a TOML file, the environment and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from handoff.settings import PROJECT_ROOT, Settings, SettingsError, load_settings


def test_defaults_need_nothing_but_the_project() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.database_url.startswith("sqlite:///")
    assert settings.model_path == PROJECT_ROOT / "models"
    assert settings.rasa_api_token is None


def test_environment_overrides_defaults_and_is_cast() -> None:
    settings = load_settings(
        environ={
            "HANDOFF_PORT": "8080",
            "HANDOFF_FALLBACK_THRESHOLD": "0.45",
            "HANDOFF_MODEL_PATH": "/srv/models",
            "HANDOFF_LOG_LEVEL": "debug",
            "HANDOFF_DATABASE_URL": "postgresql://bot@db/handoff",
        }
    )
    assert settings.port == 8080
    assert settings.fallback_threshold == 0.45
    assert settings.model_path == Path("/srv/models")
    assert settings.log_level == "DEBUG"
    assert settings.database_url == "postgresql://bot@db/handoff"


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    config = tmp_path / "handoff.toml"
    config.write_text('port = 7000\nhost = "0.0.0.0"\nfallback_threshold = 0.5\n')
    settings = load_settings(
        environ={"HANDOFF_CONFIG": str(config), "HANDOFF_PORT": "7001"}, port=7002
    )
    assert (settings.host, settings.port, settings.fallback_threshold) == ("0.0.0.0", 7002, 0.5)
    settings = load_settings(environ={"HANDOFF_PORT": "7001"}, config_file=config)
    assert settings.port == 7001


def test_overrides_of_none_are_ignored() -> None:
    assert load_settings(environ={"HANDOFF_PORT": "7001"}, port=None).port == 7001


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"HANDOFF_PORT": "eighty"}, "HANDOFF_PORT"),
        ({"HANDOFF_PORT": "0"}, "port must be between"),
        ({"HANDOFF_FALLBACK_THRESHOLD": "1.5"}, "fallback_threshold"),
        ({"HANDOFF_TARGET_PRECISION": "0"}, "target_precision must be above 0"),
        ({"HANDOFF_TARGET_PRECISION": "nan"}, "target_precision"),
        ({"HANDOFF_TARGET_PRECISION": "high"}, "HANDOFF_TARGET_PRECISION"),
        ({"HANDOFF_MAX_MESSAGE_CHARS": "0"}, "max_message_chars"),
        ({"HANDOFF_DATABASE_URL": "handoff.db"}, "not a SQLAlchemy URL"),
        ({"HANDOFF_LOG_LEVEL": "loud"}, "log_level"),
        ({"HANDOFF_REDIS_URL": "127.0.0.1:6379"}, "not a Redis URL"),
        ({"HANDOFF_REDIS_URL": "redis://127.0.0.1:6379/0"}, "PostgreSQL"),
        ({"HANDOFF_PROMOTION_MARGIN": "2"}, "promotion_margin"),
        ({"HANDOFF_VERIFICATION_BAND": "-0.1"}, "verification_band"),
        ({"HANDOFF_MODEL_POLL_SECONDS": "-1"}, "model_poll_seconds"),
        ({"HANDOFF_ASSISTANT_WORKERS": "-1"}, "assistant_workers must be between 0 and"),
        ({"HANDOFF_ASSISTANT_WORKERS": "99"}, "assistant_workers must be between 0 and"),
        ({"HANDOFF_ASSISTANT_WORKERS": "two"}, "HANDOFF_ASSISTANT_WORKERS"),
        ({"HANDOFF_RASA_API_TOKEN": "t"}, "HANDOFF_ASSISTANT_WORKERS=0"),
        ({"HANDOFF_ASSISTANT_WORKER_MODULE": "x; rm -rf /"}, "not a module name"),
        ({"HANDOFF_REDACT_PATTERNS": "card-(\\d+"}, "HANDOFF_REDACT_PATTERNS"),
        ({"HANDOFF_CONFIG": "/nonexistent/handoff.toml"}, "does not exist"),
        ({"HANDOFF_APPROVAL_BAND": "1.5"}, "approval_band"),
        ({"HANDOFF_APPROVAL_BAND": "some"}, "HANDOFF_APPROVAL_BAND"),
        ({"HANDOFF_APPROVAL_TIMEOUT": "0"}, "approval_timeout"),
        ({"HANDOFF_APPROVAL_TIMEOUT": "600"}, "at most 120"),
        ({"HANDOFF_APPROVAL_SLOTS": "0"}, "approval_slots"),
    ],
)
def test_bad_values_name_the_setting(environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment):
        load_settings(environ=environ)


def test_unknown_and_malformed_config_files_are_refused(tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("prot = 1\n")
    with pytest.raises(SettingsError, match=r"unknown setting.*prot"):
        load_settings(environ={}, config_file=unknown)
    broken = tmp_path / "broken.toml"
    broken.write_text("port = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(environ={}, config_file=broken)


def test_lists_and_thresholds_from_environment_and_file(tmp_path: Path) -> None:
    settings = load_settings(
        environ={
            "HANDOFF_ALWAYS_HUMAN_INTENTS": "report_fraud, close_account",
            "HANDOFF_INTENT_THRESHOLDS": "close_account=0.85,loan_inquiry=0.8",
        }
    )
    assert settings.always_human_intents == ("report_fraud", "close_account")
    assert settings.intent_thresholds == (("close_account", 0.85), ("loan_inquiry", 0.8))
    config = tmp_path / "handoff.toml"
    config.write_text(
        'allowed_origins = ["https://support.example"]\n[intent_thresholds]\nfees = 0.7\n'
    )
    settings = load_settings(environ={}, config_file=config)
    assert settings.intent_thresholds == (("fees", 0.7),)
    assert settings.origins() == frozenset({"https://support.example"})


def test_default_origins_are_the_server_itself() -> None:
    settings = load_settings(environ={"HANDOFF_PORT": "8080"})
    assert settings.origins() == frozenset({"http://127.0.0.1:8080", "http://localhost:8080"})


@pytest.mark.parametrize("raw", ["close_account", "close_account=high", "close_account=1.5"])
def test_bad_thresholds_are_refused(raw: str) -> None:
    with pytest.raises(SettingsError, match="HANDOFF_INTENT_THRESHOLDS"):
        load_settings(environ={"HANDOFF_INTENT_THRESHOLDS": raw})


def test_learning_and_scale_out_settings() -> None:
    settings = load_settings(
        environ={
            "HANDOFF_DATABASE_URL": "postgresql://handoff@db/handoff",
            "HANDOFF_REDIS_URL": "redis://cache:6379/2",
            "HANDOFF_REDACT_PATTERNS": "ACC-\\d{8}\nREF[0-9]+",
            "HANDOFF_PROMOTION_MARGIN": "0.02",
        }
    )
    assert settings.redis_url == "redis://cache:6379/2"
    assert settings.redact_patterns == ("ACC-\\d{8}", "REF[0-9]+")
    assert settings.promotion_margin == 0.02


def test_a_project_dir_moves_the_rasa_project_and_its_state_but_explicit_settings_win(
    tmp_path: Path,
) -> None:
    project = tmp_path / "library"
    project.mkdir()
    (project / "config.yml").write_text("recipe: default.v1\n")
    settings = load_settings(environ={"HANDOFF_PROJECT_DIR": str(project)})
    assert settings.bot_dir == project
    assert settings.data_dir == project / "data"
    assert settings.test_data == project / "tests" / "heldout_nlu.yml"
    assert settings.model_path == project / "models"
    assert settings.database_url == f"sqlite:///{project / '.handoff' / 'handoff.db'}"
    assert settings.endpoints_path() is None
    (project / "endpoints.yml").write_text("action_endpoint:\n  url: http://x:1/webhook\n")
    assert settings.endpoints_path() == project / "endpoints.yml"

    explicit = load_settings(
        environ={
            "HANDOFF_PROJECT_DIR": str(project),
            "HANDOFF_DATA_DIR": "/srv/data",
            "HANDOFF_ENDPOINTS_FILE": "/srv/endpoints.yml",
        }
    )
    assert explicit.data_dir == Path("/srv/data")
    assert explicit.bot_dir == project
    assert explicit.endpoints_path() == Path("/srv/endpoints.yml")


def test_a_project_dir_must_be_a_rasa_project_and_the_action_server_auto_or_off(
    tmp_path: Path,
) -> None:
    with pytest.raises(SettingsError, match=r"no config\.yml"):
        load_settings(environ={"HANDOFF_PROJECT_DIR": str(tmp_path)})
    with pytest.raises(SettingsError, match="action_server must be auto"):
        load_settings(environ={"HANDOFF_ACTION_SERVER": "sometimes"})
    assert load_settings(environ={"HANDOFF_ACTION_SERVER": "OFF"}).action_server == "off"
    assert Settings().endpoints_path() == PROJECT_ROOT / "bot" / "endpoints.yml"
