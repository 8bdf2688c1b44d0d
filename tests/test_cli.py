import click
import pytest
from click.testing import CliRunner

from recsys.cli import cli


def all_commands(group: click.Group, prefix=()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        yield (*prefix, name)
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


@pytest.mark.parametrize("path", [(), *all_commands(cli)], ids=" ".join)
def test_every_command_has_help(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")
    # A help text that says what the command does, not just its options.
    description = result.output.split("\n\n")[1].strip()
    assert len(description) > 20, result.output
    # and every option says what it is for
    ctx = click.Context(cli)
    command = cli
    for name in path:
        command = command.get_command(ctx, name)
    bare = [p.opts[0] for p in command.params if isinstance(p, click.Option) and not p.help]
    assert not bare, f"options without a help text: {bare}"


def test_stats_json_on_an_empty_catalog(run_cli, engine):
    import json

    stats = json.loads(run_cli("stats", "--json").output)
    assert stats["items"] == 0 and stats["interactions"] == 0 and stats["active_bundle"] is None


@pytest.mark.parametrize(
    ("option", "value", "mentions"),
    [
        ("--factors", "0", "--factors"),
        ("--iterations", "0", "--iterations"),
        ("--half-life-days", "-5", "--half-life-days"),
        ("--event-weight", "purchase=-3", "purchase=-3"),
        ("--event-weight", "purchase=nan", "purchase=nan"),
        ("--event-weight", "=4", "=4"),
    ],
)
def test_train_refuses_settings_that_would_make_a_broken_model(run_cli, option, value, mentions):
    """Refused before any work, naming the option: not a bundle of untrained factors, a
    BLAS error, or old events counting exponentially more."""
    result = run_cli("train", option, value, expect_exit=2)
    assert mentions in result.output
