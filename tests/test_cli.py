import json
import re
from datetime import datetime

import click
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, update

from recsys.catalog.models import Interaction
from recsys.cli import cli
from recsys.evaluation.neighbourhood import EASE
from tests.shop_fixture import populate


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


def test_every_seed_is_a_whole_number_from_0(run_cli, engine):
    """`evaluate --seed -1` ended in numpy's "ValueError: expected non-negative integer"
    traceback after reading the catalog; `--seed -1 --write-split DIR` went through."""
    ctx = click.Context(cli)
    for path in all_commands(cli):
        command = cli
        for name in path:
            command = command.get_command(ctx, name)
        for param in command.params:
            if param.name == "seed":
                assert isinstance(param.type, click.IntRange) and param.type.min == 0, path
    for args in (["--seed", "-1"], ["--seed", "-1", "--write-split", "split"]):
        refused = run_cli("evaluate", *args, expect_exit=2)
        assert "Invalid value for '--seed'" in refused.output, refused.output


def test_stats_json_on_an_empty_catalog(run_cli, engine):
    import json

    stats = json.loads(run_cli("stats", "--json").output)
    assert stats["items"] == 0 and stats["interactions"] == 0 and stats["active_bundle"] is None
    assert len(stats["catalog_id"]) == 32  # made by the migrations, once per catalog
    assert stats["event_times"] == {
        "first": None, "last": None, "without_time": 0, "past_the_clock": 0
    }  # fmt: skip


def test_stats_say_when_the_events_happened_and_which_have_odd_times(run_cli, engine):
    """What a time-based split and the time decay will make of the log: its span, events
    without a time, and any a catalog holds past the clock (ingest refuses them now)."""
    populate(engine)
    with engine.begin() as connection:
        first = connection.execute(select(func.min(Interaction.id))).scalar()
        connection.execute(
            update(Interaction).where(Interaction.id == first).values(timestamp=None)
        )
        late = datetime(2099, 1, 1)
        connection.execute(
            update(Interaction).where(Interaction.id == first + 1).values(timestamp=late)
        )
    said = run_cli("stats").output
    span = "  times: 2024-01-01T00:00:00 to 2099-01-01T00:00:00 UTC"
    assert f"{span} (1 without a time, 1 over a day past this machine's clock)" in said


@pytest.mark.parametrize(
    ("option", "value", "mentions"),
    [
        ("--factors", "0", "--factors"),
        ("--iterations", "0", "--iterations"),
        ("--half-life-days", "-5", "--half-life-days"),
        ("--event-weight", "purchase=-3", "purchase=-3"),
        ("--event-weight", "purchase=nan", "purchase=nan"),
        ("--event-weight", "=4", "=4"),
        ("--event-weight", "rating=1e300", "from 0 to 1,000,000"),  # NaN factors in training
    ],
)
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_train_refuses_settings_that_would_make_a_broken_model(
    run_cli, command, option, value, mentions
):
    """Refused before any work, naming the option: not a bundle of untrained factors, a
    BLAS error, or old events counting exponentially more. `recsys evaluate` takes the same
    model options and refuses the same values."""
    result = run_cli(command, option, value, expect_exit=2)
    assert mentions in result.output and option in result.output


def finite_options():
    from recsys.commands import Finite

    for path in all_commands(cli):
        command = cli
        for name in path:
            command = command.get_command(click.Context(cli), name)
        for param in command.params:
            if isinstance(param, click.Option) and isinstance(param.type, Finite):
                yield (*path, param.opts[0])


@pytest.mark.parametrize("value", ["inf", "-inf", "1e999", "nan"])
@pytest.mark.parametrize("path", list(finite_options()), ids=" ".join)
def test_every_number_option_refuses_an_infinite_value_naming_it(path, value):
    """`train --half-life-days inf` was a ValueError traceback from the model's config, exit
    1; `train-images --lr inf` trained to NaN. A usage error naming the option, before any
    work (none of them means "no bound" by inf)."""
    *command, option = path
    result = CliRunner().invoke(cli, ["--database-url", "sqlite://", *command, option, value])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output
    assert "Traceback" not in result.output


def test_bad_settings_and_files_are_one_line_naming_the_fix(run_cli, engine, tmp_path):
    """What a user mistypes gets an error naming it and what to do, not a traceback."""
    runner = CliRunner()
    for url, says, code in [
        ("foo://bar", "use sqlite:///PATH or postgresql+psycopg", 2),
        # a server away may come back: the same command may work later (EX_TEMPFAIL)
        ("postgresql+psycopg://u@127.0.0.1:1/db", "did not answer", 75),
    ]:
        result = runner.invoke(cli, ["--database-url", url, "stats"])
        assert result.exit_code == code and says in result.output, result.output
    # a SQLite file: the path and what is wrong with it (a traceback for a file that is no
    # database; "check that its server is running" for a locked or read-only one)
    text = tmp_path / "notes.db"
    text.write_text("not a database\n" * 400)
    missing = tmp_path / "missing.db"
    for path, says in [
        (text, f"{text} is not a SQLite database"),
        (missing, f"run `recsys db upgrade` first ({missing})"),
    ]:
        result = runner.invoke(cli, ["--database-url", f"sqlite:///{path}", "stats"])
        assert result.exit_code == 2 and says in result.output, result.output
    assert "is not one of the catalog's" in run_cli("db", "upgrade", "9999", expect_exit=2).output
    cutoff = run_cli("evaluate", "--split", "time-cutoff", "--cutoff", "soon", expect_exit=2)
    assert "ISO time" in cutoff.output
    fake = tmp_path / "items.csv.gz"
    fake.write_text("item_id\na1\n")
    assert "not gzip-compressed" in run_cli("ingest", "items", fake, expect_exit=2).output
    plain = tmp_path / "items.csv"
    plain.write_text("item_id\na1\n")
    nowhere = run_cli(
        "ingest", "items", plain, "--rejects", tmp_path / "no" / "r.csv", expect_exit=2
    )
    assert "does not exist" in nowhere.output
    assert "0 accepted" not in nowhere.output and "1 accepted" not in nowhere.output
    both = run_cli("evaluate", "--replay", "--write-split", tmp_path / "s", expect_exit=2)
    assert "--write-split and --replay are two steps" in both.output
    afile = tmp_path / "afile"
    afile.write_text("")
    for args in (
        ["evaluate", "--out"],
        ["evaluate", "--write-split"],
        ["export", "interactions", "--out"],
    ):
        under = run_cli(*args, afile / "sub", expect_exit=2)  # before any work, not after it
        assert f"{afile} is a file: {afile / 'sub'} cannot be made under it" in under.output
    pickled = tmp_path / "v.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "v.ids.txt").write_text("a1\n")
    vectors = run_cli("catalog", "outliers", "--vectors", pickled, expect_exit=2)
    assert "not a .npy array of numbers" in vectors.output
    pickled.write_bytes(b"")  # an empty file: it said only "Aborted!"
    vectors = run_cli("catalog", "outliers", "--vectors", pickled, expect_exit=2)
    assert "not a .npy array of numbers (No data left in file)" in vectors.output
    np.save(pickled, np.ones((2, 3), dtype=complex))  # the imaginary part was dropped
    vectors = run_cli("catalog", "outliers", "--vectors", pickled, expect_exit=2)
    assert "type complex128: give an (items, dimensions) array of numbers" in vectors.output


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "is empty"),
        ("item_id,label\na1,x,y\n", "line 2 has 3 fields"),
        ("item_id,label\n\na1,x\n\na2,x,y\n", "line 5 has 3 fields"),  # it said line 3
        ("item_id,label\n,x\n", "line 2 has a label but no item_id"),
        ("item_id,label\na1,x\na1,y\n", "'a1' is labelled x and y"),
        ("item_id\tlabel\na1\tx\n", "needs a comma-separated header row item_id,label"),
        ('{"a1": "x"}\n', 'its first line is \'{"a1": "x"}\''),
    ],
)
def test_a_labels_file_that_cannot_be_read_as_meant_says_where(tmp_path, text, says):
    from recsys.commands.catalog import read_labels
    from recsys.errors import InvalidInput

    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(InvalidInput, match=re.escape(says)):
        read_labels(path)


def test_a_labels_file_with_the_label_column_partly_filled_labels_those_items(tmp_path):
    """A spreadsheet export of every item with a few labels filled in was refused."""
    from recsys.commands.catalog import read_labels

    path = tmp_path / "labels.csv"
    path.write_text("Item_ID,Label\na1,shoe\na2,\na3, \na4,bag\n")
    assert read_labels(path).to_dict() == {"a1": "shoe", "a4": "bag"}


def test_ids_and_labels_files_keep_their_ids_as_written(tmp_path):
    """With one id read as missing by pandas ("NaN", "null", an empty cell), every id of an
    --items file came back cut to its first character; labels lost their "NaN" items."""
    from recsys.commands.catalog import read_ids
    from recsys.errors import InvalidInput
    from recsys.evaluation.images import read_labels

    path = tmp_path / "ids.csv"
    path.write_text("item_id,x\nNaN,1\nnull,\n\n00123,\n 1e5 ,\n")
    assert read_ids(path).tolist() == ["NaN", "null", "00123", "1e5"]
    path.write_text("item_id,x\nitem-y,\n,\nitem-x,\n")
    with pytest.raises(InvalidInput, match="line 3 has no item_id"):
        read_ids(path)

    path = tmp_path / "labels.csv"
    path.write_text("item_id,label,split\nNaN,1,test\nnull,0,\n\n00123,1,train\n")
    labels = read_labels(path)
    assert labels["item_id"].tolist() == ["NaN", "null", "00123"]
    assert labels["split"].tolist() == ["test", "", "train"]
    path.write_text("item_id,label\nNaN,1\na,\n")
    with pytest.raises(InvalidInput, match="line 3 has no item_id or no label"):
        read_labels(path)


@pytest.mark.parametrize(
    ("driver_says", "says"),
    [
        ("database is locked", "/x/c.db is locked by another writer (waited 30 s)"),
        ("database or disk is full", "the disk holding /x/c.db is full"),
        ("attempt to write a readonly database", "/x/c.db or its folder is read-only"),
        ("unable to open database file", "cannot open /x/c.db: its folder is missing"),
        ("database disk image is malformed", "/x/c.db is damaged"),
    ],
)
def test_a_sqlite_failure_names_the_file_and_what_is_wrong(driver_says, says):
    """Every SQLite error said "did not answer ...; check that its server is running"."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from recsys.catalog.db import database_problem, passing

    error = OperationalError("SELECT 1", {}, sqlite3.OperationalError(driver_says))
    assert database_problem(error, "sqlite:////x/c.db").startswith(says)
    assert passing(error) == (driver_says == "database is locked")  # exit 75, else 2
    server = database_problem(error, "postgresql+psycopg://u@db/shop")
    assert "that its server is running" in server


def test_an_items_file_listing_items_removed_before_says_so(run_cli, engine, tmp_path):
    """A marketplace's nightly file still listing a banned seller's 1,000 items deleted over
    HTTP that day brought them back as "inserted": 1000, without a word."""
    from recsys.ingest.item_writes import delete_item

    items = tmp_path / "items.csv"
    items.write_text("item_id,title\na1,Red shoe\na2,Blue shoe\na3,Green shoe\n")
    run_cli("ingest", "items", items, "-q")
    delete_item(engine, "a2")
    back = run_cli("ingest", "items", items, "-q")
    assert "1 new" in back.output
    assert "warning: 1 new items had been removed from the catalog before (a2;" in back.output
    again = json.loads(run_cli("ingest", "items", items, "-q", "--json").stdout)
    assert again["removed_before"] == 0 and again["unchanged"] == 3


def test_an_items_file_that_would_clear_or_is_no_items_file_says_so(run_cli, engine, tmp_path):
    """An interactions file given as items replaced every item it named (title and photo
    gone, user_id/event/weight as attributes); a stock-only file cleared titles silently."""
    items = tmp_path / "items.csv"
    items.write_text("item_id,title,brand\na1,Red shoe,Acme\na2,Blue shoe,Acme\n")
    run_cli("ingest", "items", items, "-q")
    events = tmp_path / "events.csv"
    events.write_text("user_id,item_id,event\nu1,a1,view\n")
    refused = run_cli("ingest", "items", events, "-q", expect_exit=2)
    assert "has a 'user_id' column" in refused.output
    assert "recsys ingest interactions" in refused.output
    stock = tmp_path / "stock.csv"
    stock.write_text("item_id,in_stock\na1,false\n")
    cleared = run_cli("ingest", "items", stock, "-q")
    assert "1 updated" in cleared.output
    assert "warning: 1 updated items lost their title, photo or attributes (a1)" in cleared.output
    again = run_cli("ingest", "items", items, "-q", "--json")
    assert json.loads(again.stdout)["cleared_fields"] == 0
    # A script reading --json gets its summary for an unusable file too (stdout was empty).
    unusable = json.loads(run_cli("ingest", "items", events, "-q", "--json", expect_exit=2).stdout)
    assert unusable["accepted"] == 0 and "has a 'user_id' column" in unusable["error"]


def test_evaluate_refuses_what_it_would_ignore_or_choke_on_before_the_run(
    run_cli, engine, tmp_path
):
    """--service without --replay ran a whole offline evaluation; a labels file without a
    label column failed after the run; --k 100000 on 300 items was killed (23 GB)."""
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\n" + "".join(f"i{n},Item {n}\n" for n in range(5)))
    run_cli("ingest", "items", items, "-q")
    ignored = run_cli("evaluate", "--service", "http://127.0.0.1:1", expect_exit=2)
    assert "--service applies to --replay only" in ignored.output
    split = run_cli("evaluate", "--write-split", tmp_path / "s", "--factors", "8", expect_exit=2)
    assert "--factors shapes the model of the offline evaluation; --write-split" in split.output
    labels = run_cli("evaluate", "--labels", items, expect_exit=2)
    assert "lacks column(s) label" in labels.output
    huge = run_cli("evaluate", "--k", "10,100000", expect_exit=2)
    assert "cut-off 100,000 is past the catalog's 5 items" in huge.output
    # /proc/nope passed the path's check (root writes anywhere) and failed after the run
    for out in ("/proc/nope", "/proc/nope/deeper"):
        unwritable = run_cli("evaluate", "--out", out, expect_exit=2)
        assert "Invalid value for" in unwritable.output and f"{out} cannot be" in unwritable.output


def test_an_ingest_interrupted_or_out_of_disk_says_what_was_stored(
    run_cli, engine, tmp_path, monkeypatch
):
    """Ctrl-C said "Aborted!" (exit 1, ingest's "rows rejected"); a full disk under the
    rejects file was a traceback. Both stop after whole batches, and say how many rows."""
    import errno

    from recsys.ingest.items import ItemIngester
    from recsys.ingest.report import RejectsWriter

    items = tmp_path / "items.csv"
    items.write_text("item_id,title\n" + "".join(f"i{n},Item {n}\n" for n in range(6)) + ",x\n")
    write, calls = ItemIngester.write, []

    def interrupted(self, connection, rows, report):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return write(self, connection, rows, report)

    monkeypatch.setattr(ItemIngester, "write", interrupted)
    stopped = run_cli("ingest", "items", items, "-q", "--batch-size", "2", expect_exit=130)
    assert "interrupted; 2 rows were stored" in stopped.output
    assert "run the same command again" in stopped.output
    monkeypatch.undo()

    def full(self, reject):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(RejectsWriter, "add", full)
    failed = run_cli("ingest", "items", items, "-q", "--batch-size", "2", expect_exit=2)
    assert "stopped: No space left on device" in failed.output
    assert "Traceback" not in failed.output  # the 2 the first run stored are said apart:
    assert "6 rows were stored (4 new or changed, the rest as before)" in failed.output
    assert not list(tmp_path.glob("*.rejects.csv*"))


def test_a_global_option_after_the_command_says_where_it_goes():
    """`recsys train --device cpu` said "No such option: --device. Did you mean '--events'?"."""
    runner = CliRunner()
    for args, says in [
        (["stats", "--database-url", "sqlite:///x.db"], "`recsys --database-url VALUE stats"),
        (["train", "--device", "cpu"], "`recsys --device VALUE train ...`"),
        (["db", "current", "--artifacts-dir", "a"], "`recsys --artifacts-dir VALUE db current"),
        (["stats", "-v"], "`recsys -v stats ...`"),
    ]:
        result = runner.invoke(cli, args)
        assert result.exit_code == 2 and says in result.output, result.output
        assert "Did you mean" not in result.output


def test_serve_on_a_port_in_use_fails_before_saying_it_serves(run_cli, engine):
    """It printed "serving on http://...", then "Address already in use", exit 1."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run_cli("serve", "--port", port, expect_exit=2)
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in busy.output
    assert "--port" in busy.output and "serving on" not in busy.output


def test_an_ingest_of_a_file_without_rows_warns(run_cli, engine, tmp_path):
    header = tmp_path / "items.csv"
    header.write_text("item_id,title\n")
    done = run_cli("ingest", "items", header, "-q")  # was "0 accepted ..., 0 rejected" alone
    assert "warning: items.csv holds no rows, only its header" in done.output


def test_evaluate_on_a_single_shopper_refuses_before_training(run_cli, engine, tmp_path):
    """One shopper's 10 events: every contender trained, then EASE^R's choice of lambda
    on a validation slice holding nobody out crashed with KeyError 'recall@10'."""
    items = tmp_path / "items.csv"
    items.write_text("item_id,colour\n" + "".join(f"it{n:02d},c{n % 3}\n" for n in range(12)))
    run_cli("ingest", "items", items, "-q")
    events = tmp_path / "events.csv"
    rows = [f"u0,it{n:02d},view,2026-11-{1 + n:02d}" for n in range(10)]
    events.write_text("user_id,item_id,event,timestamp\n" + "\n".join(rows) + "\n")
    run_cli("ingest", "interactions", events, "-q")
    refused = run_cli("evaluate", "-q", "--out", tmp_path / "out", expect_exit=2)
    said = "evaluate needs at least 2 users with held-out events; this catalog has 1"
    assert said in refused.output and "Traceback" not in refused.output


def test_a_parameter_choice_with_no_validation_users_keeps_the_first_candidate():
    interactions = pd.DataFrame(
        {"user_id": ["u0"], "item_id": ["a"], "weight": [1.0], "timestamp": [pd.NaT]}
    )
    assert EASE(lambdas=(300.0, 1000.0))._choose(interactions, np.array(["a", "b"])) == 300.0


def test_an_item_with_nothing_in_common_with_any_other_has_no_similar_items(
    run_cli, engine, tmp_path, monkeypatch
):
    """An item with no attributes and no events scored 0 with every other: its similar
    items were the catalog's first rows, at 0, with no reason. Evaluating a catalog with
    nothing to learn from was a traceback; asking for a GPU that is not there trained on
    the CPU without a word."""
    items = tmp_path / "items.csv"
    items.write_text("item_id\n" + "".join(f"it{n:02d}\n" for n in range(12)))
    run_cli("ingest", "items", items, "-q")
    refused = run_cli("evaluate", "-q", "--out", tmp_path / "out", expect_exit=2)
    assert "nothing to learn from" in refused.output and "Traceback" not in refused.output
    events = tmp_path / "events.csv"
    rows = [f"u{n % 4},it{n % 9:02d},view,2026-11-{1 + n % 27:02d}" for n in range(36)]
    events.write_text("user_id,item_id,event,timestamp\n" + "\n".join(rows) + "\n")
    run_cli("ingest", "interactions", events, "-q")
    run_cli("--artifacts-dir", tmp_path / "art", "train", "-q")
    alone = run_cli("--artifacts-dir", tmp_path / "art", "similar", "--item", "it11")
    assert "it00" not in alone.output and "no item has anything in common with it" in alone.output
    viewed = run_cli("--artifacts-dir", tmp_path / "art", "similar", "--item", "it01")
    assert "viewed together" in viewed.output
    # left out before diversity picks, not after: a diverse list is as long as a plain one
    lengths = [
        len(json.loads(run_cli("--artifacts-dir", tmp_path / "art", "similar", "--item", "it01",
                               "-k", "6", "--diversity", d, "--json").stdout)[0]["ids"])
        for d in ("0", "0.5", "1")
    ]  # fmt: skip
    assert lengths == [lengths[0]] * 3 and lengths[0] >= 5, lengths
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    gpu = run_cli(
        "--device", "cuda", "--artifacts-dir", tmp_path / "art", "train", "-q", expect_exit=2
    )
    assert "torch sees no GPU" in gpu.output


def test_more_like_this_stays_content_led_when_no_slice_can_be_held_out(run_cli, engine, tmp_path):
    """With one shopper nothing can be held out to choose weights, and both item-to-item
    surfaces took the feed's: a mug's "more like this" listed what that shopper happened to
    view beside it (bowls and plates), "viewed together"."""
    items = tmp_path / "items.csv"
    kinds = ["mug", "bowl", "plate"]
    items.write_text("item_id,title,kind\n" + "".join(
        f"it{n:02d},{kinds[n % 3].title()} {n},{kinds[n % 3]}\n" for n in range(18)
    ))  # fmt: skip
    run_cli("ingest", "items", items, "-q")
    events = tmp_path / "events.csv"
    viewed = [0, *(n for n in range(18) if n % 3)]  # one mug among the bowls and plates
    rows = [f"u1,it{n:02d},view,2026-11-{1 + n:02d}" for n in viewed]
    events.write_text("user_id,item_id,event,timestamp\n" + "\n".join(rows) + "\n")
    run_cli("ingest", "interactions", events, "-q")
    run_cli("--artifacts-dir", tmp_path / "art", "train", "-q")
    answer = run_cli(
        "--artifacts-dir", tmp_path / "art", "similar", "--item", "it00", "-k", "5", "--json"
    )
    listed = json.loads(answer.stdout)[0]["titles"]
    assert listed and all(title.startswith("Mug") for title in listed), listed


def test_the_replays_key_help_names_every_scope_it_needs():
    """With closed reads a replay also asks for feeds and similar items: the help named only
    events:write."""
    help_text = " ".join(CliRunner().invoke(cli, ["evaluate", "--help"]).output.split())
    assert "events:write to post, and where reads are closed feeds:read and items:read" in help_text


def test_users_show_tells_apart_events_a_fraction_of_a_second_apart(engine, run_cli, tmp_path):
    """Two events stored 0.123 s apart (two events, by the README) were shown to the
    second, as one repeated."""
    items = tmp_path / "items.csv"
    items.write_text("item_id\na1\n")
    run_cli("ingest", "items", items, "-q")
    events = tmp_path / "events.csv"
    events.write_text(
        "user_id,item_id,event,timestamp\n"
        "u1,a1,view,2024-01-02T10:00:00Z\nu1,a1,view,2024-01-02T10:00:00.123Z\n"
    )
    run_cli("ingest", "interactions", events, "-q")
    shown = run_cli("users", "show", "u1").output
    assert "2024-01-02 10:00:00  view" in shown and "2024-01-02 10:00:00.123000  view" in shown


def test_a_file_the_machine_refuses_is_one_line(run_cli, db_url, tmp_path):
    """An OSError of a full disk, a read-only folder, a name too long... was a traceback
    (exit 1): one line now, naming the file, exit 2."""
    if not db_url.startswith("sqlite"):
        pytest.skip("db backup backs SQLite catalogs up")
    run_cli("db", "upgrade")
    name = tmp_path / ("c" * 256 + ".db")
    result = run_cli("db", "backup", name, expect_exit=2)
    assert result.output == f"error: File name too long: {name}\n"


def test_a_tilde_is_the_home_folder(tmp_path, monkeypatch):
    """A '~' that no shell expanded (quoted, after =, from the environment) made a folder
    named ~ in the working folder, and "written to ~/ev" read as the home folder."""
    home, here = tmp_path / "home", tmp_path / "here"
    home.mkdir()
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RECSYS_ARTIFACTS_DIR", "~/artifacts")
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, ["--database-url", "sqlite:///~/shop.db", *args])
        assert result.exit_code == 0, result.output
        return result.output

    run("db", "upgrade")
    assert (home / "shop.db").is_file()
    assert f"written to {home / 'ev'}" in run("export", "interactions", "--out", "~/ev")
    assert f"backed up to {home / 'bk.db'}" in run("db", "backup", "~/bk.db", "-q")
    shop = run("datasets", "prepare", "synthetic-shop", "--out", "~/s", "--items", "50",
               "--users", "20", "--events", "200", "--no-images", "-q")  # fmt: skip
    assert f"synthetic-shop written to {home / 's'}" in shop
    run("ingest", "items", str(home / "s" / "items.csv"), "-q")
    run("ingest", "interactions", str(home / "s" / "interactions.csv"), "-q")
    run("train", "--quiet")
    assert (home / "artifacts" / "bundles").is_dir()
    assert list(here.iterdir()) == []


@pytest.mark.parametrize(
    "path",
    [("train",), ("evaluate",), ("recommend",), ("similar",), ("export", "feeds"),
     ("export", "similar")],
    ids=" ".join,
)  # fmt: skip
def test_the_readmes_cli_reference_names_every_option_of_train_and_evaluate(path):
    """Its `recsys train` row listed 4 of 17 options; the answering commands' --filter too."""
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    reference = readme[readme.index("## CLI reference") : readme.index("## Tests and CI")]
    command = cli
    for name in path:
        command = command.get_command(click.Context(cli), name)
    name = " ".join(path)
    options = [p.opts[0] for p in command.params if isinstance(p, click.Option)]
    missing = [o for o in options if not re.search(re.escape(o) + r"(?![\w-])", reference)]
    assert not missing, f"recsys {name} options missing from README's CLI reference: {missing}"
