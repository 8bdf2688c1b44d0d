from pathlib import Path

import pytest

from recsys.errors import InvalidSettings
from recsys.settings import Settings


def test_defaults_keep_everything_under_var():
    settings = Settings.load(environ={})
    assert settings.database_url == "sqlite:///var/recsys.db"
    assert settings.artifacts_dir == Path("var/artifacts")
    assert settings.device == "auto"


def test_flags_beat_environment_beat_defaults():
    environ = {"RECSYS_DATABASE_URL": "sqlite:///env.db", "RECSYS_DEVICE": "cpu"}
    settings = Settings.load(environ=environ, device="cuda:1", artifacts_dir=None)
    assert settings.database_url == "sqlite:///env.db"
    assert settings.device == "cuda:1"
    assert settings.artifacts_dir == Path("var/artifacts")


BAD_VALUES = pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("device", "gpu", "device 'gpu' is not one of"),
        ("database_url", "recsys.db", "not a SQLAlchemy URL"),
        ("currency", "euro", "currency 'euro' is not an ISO 4217 code; write e.g. EUR"),
        ("currency", "eur", "currency 'eur' is not an ISO 4217 code"),
        ("currency", "EUR\n", "is not an ISO 4217 code"),
        # each was accepted: every search a 429, an origin no browser sends, every read a 401
        ("search_rate_limit", "0/minute", "allows no request at all"),
        ("cors_origins", "https://shop.example:99999", "is not an origin"),
        ("cors_origins", "*,https://shop.example", r"give \* alone"),
        ("public_scopes", " ", "names no scope"),
        ("live_max_items", "many", "live_max_items 'many' is not a whole number"),
        ("database_timeout", "soon", "database_timeout 'soon' is not a number of seconds"),
    ],
)


@BAD_VALUES
def test_bad_values_name_the_setting(field, value, message):
    with pytest.raises(InvalidSettings, match=message) as raised:
        Settings.load(environ={}, **{field: value})
    assert "set by" not in str(raised.value)  # not from a variable; the CLI names its flags


@BAD_VALUES
def test_a_bad_value_from_the_environment_names_its_variable(field, value, message):
    """`RECSYS_DEVICE=bogus recsys stats` said "device 'bogus' is not one of auto, cpu, cuda,
    cuda:N", naming neither the variable nor where to look."""
    variable = f"RECSYS_{field.upper()}"
    with pytest.raises(InvalidSettings, match=message) as raised:
        Settings.load(environ={variable: value})
    assert str(raised.value).endswith(f"(set by {variable})")
    # a value given over it is the one refused, not the variable's
    with pytest.raises(InvalidSettings) as raised:
        Settings.load(environ={"RECSYS_DEVICE": "cpu"}, device="tpu")
    assert "set by" not in str(raised.value)


def test_bad_environment_value_is_a_usage_error(run_cli, monkeypatch):
    monkeypatch.setenv("RECSYS_DEVICE", "tpu")
    result = run_cli("stats", expect_exit=2)
    said = "device 'tpu' is not one of auto, cpu, cuda, cuda:N (set by RECSYS_DEVICE)"
    assert said in result.output
    flagged = run_cli("--device", "gpu", "stats", expect_exit=2).output
    assert "device 'gpu' is not one of auto, cpu, cuda, cuda:N (set by --device)" in flagged


def test_a_secret_read_from_a_file_loses_its_line_break_and_blank_ones_are_refused():
    """A token mounted from a file ends in a newline: it started, then refused the token."""
    token = "Xk9fj3kLmn0pQrs7TuVw"
    assert Settings.load(environ={"RECSYS_ADMIN_TOKEN": token + "\n"}).admin_token == token
    with pytest.raises(InvalidSettings, match="admin_token is only white space"):
        Settings.load(environ={"RECSYS_ADMIN_TOKEN": " " * 20})


def test_a_misspelt_variable_is_named_with_the_setting_it_resembles(caplog):
    """RECSYS_DATABSE_URL was ignored in silence; `db upgrade` then made an empty catalog."""
    Settings.load(environ={"RECSYS_DATABSE_URL": "sqlite:///shop.db", "RECSYS_BIND": "x:1"})
    said = [r.getMessage() for r in caplog.records]
    assert any("RECSYS_DATABSE_URL" in m and "did you mean RECSYS_DATABASE_URL?" in m for m in said)
    assert not any("RECSYS_BIND" in m for m in said)  # the server's own setting


def test_an_origin_is_matched_as_browsers_send_it():
    assert Settings(cors_origins="https://Shop.Example").cors_origins == ("https://shop.example",)


def test_a_flask_switch_reads_false_in_any_case():
    """RECSYS_FLASK_CARD_SNAPSHOT=False (as shells and YAML write it) was refused."""
    from flask import Config

    from services.app import DEFAULTS, check_config

    config = Config("")
    config.from_mapping({**DEFAULTS, "CARD_SNAPSHOT": "False"})
    check_config(config)
    assert config["CARD_SNAPSHOT"] is False


def test_a_tilde_in_the_artifacts_and_images_folders_is_the_home_folder(monkeypatch, tmp_path):
    """RECSYS_ARTIFACTS_DIR=~/a (quoted, as a unit file or .env writes it) made the service
    look in a folder named ~ in its working folder (the CLI expanded it, the service not)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = Settings(artifacts_dir="~/a", images_root="~/photos")
    assert settings.artifacts_dir == tmp_path / "a" and settings.images_root == tmp_path / "photos"
