"""The command line edge: one line and exit 1 for errors, a traceback only with --debug."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from client.cli import main


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("check", "update", "boot", "run", "status", "provision", "log"):
        assert command in result.output


def test_missing_config_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["status", "--config", str(tmp_path / "none.toml")])
    assert result.exit_code == 1
    assert (
        result.stderr.strip() == f"ota-client: error: configuration file not found: "
        f"{tmp_path / 'none.toml'}"
    )
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["--debug", "--config", str(tmp_path / "none.toml"), "status"]
    )
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert result.stderr.strip().endswith(f"configuration file not found: {tmp_path / 'none.toml'}")


def test_config_from_environment(tmp_path: Path) -> None:
    result = CliRunner(env={"OTA_CLIENT_CONFIG": str(tmp_path / "env.toml")}).invoke(
        main, ["--json", "check"]
    )
    assert result.exit_code == 1
    assert "env.toml" in result.stderr
