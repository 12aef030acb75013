"""Readers that never lose rows silently, and outputs that never replace what they should not (issue 10).

Each test reproduces one defect class of the probe: the score path through
:func:`score_stream` on real bytes (and the CLI where the exit status and
message are the point), the run path through :class:`LineParser`,
:class:`FileSource` and the :class:`Agent` with real files. "No silent loss"
is checked as rows read = rows scored + rows reported as errors.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import queue
import stat
import subprocess
import threading

import pytest
from broker import wait_until
from conftest import BIN, run_env

from edgeml_runtime import Model, RowError
from edgeml_runtime.agent import Agent
from edgeml_runtime.errors import InputError, SettingsError, SourceError
from edgeml_runtime.outputs import output_file
from edgeml_runtime.parsing import ReadLimits
from edgeml_runtime.records import score_stream
from edgeml_runtime.settings import resolve_settings
from edgeml_runtime.stream import END, FileSource, LineParser

NOWHERE = "mqtt://127.0.0.1:9"  # the discard port: nothing listens


def runtime(*args, stdin: str | None = None):
    return subprocess.run([str(BIN / "edgeml-runtime"), *map(str, args)], input=stdin, capture_output=True,
                          text=True, env=run_env(), timeout=120)


@pytest.fixture(scope="module")
def model(demo_bundle) -> Model:
    return Model.load(demo_bundle)


@pytest.fixture(scope="module")
def lines(demo_rows) -> list[str]:
    """The demo CSV: its header and 50 rows, without line endings."""
    return demo_rows.read_text().splitlines()


@pytest.fixture(scope="module")
def records(demo_rows) -> list[dict]:
    with open(demo_rows, newline="") as f:
        return list(csv.DictReader(f))


def score(model, data: bytes, fmt: str, **kw):
    """Score ``data`` with ``on_error="skip"``: the report and the records written."""
    out = io.StringIO()
    report = score_stream(model, io.BytesIO(data), out, fmt, on_error="skip", keep_errors=1000, **kw)
    text = out.getvalue()
    written = list(csv.DictReader(io.StringIO(text))) if fmt == "csv" else [json.loads(x) for x in text.splitlines()]
    assert report.rows == report.scored + report.bad and len(written) == report.scored
    return report, written


def jsonl(records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


# --- the score path ----------------------------------------------------------------------------

def test_an_unclosed_quote_costs_its_row_not_the_rest_of_the_file(model, lines, tmp_path):
    rows = (lines[1:] * 20)[:1000]
    rows[3] = rows[3].replace(",M-", ',"M-', 1)  # row 4 opens a quote it never closes
    f = tmp_path / "unclosed.csv"
    f.write_text("\n".join([lines[0], *rows]) + "\n")
    r = runtime("score", model.bundle_dir, "--input", f, "--on-error", "skip", "--output", tmp_path / "o.csv")
    assert r.returncode == 0, r.stderr
    assert "read 1000 row(s): scored 999 row(s), skipped 1" in r.stderr
    assert "row 4: opens a quoted value that is still open after 100 lines" in r.stderr
    assert len(list(csv.DictReader((tmp_path / "o.csv").open()))) == 999

    near_end = (lines[1:] * 20)[:1000]
    near_end[996] = near_end[996].replace(",M-", ',"M-', 1)  # runs to the end of the file within the line limit
    report, _ = score(model, ("\n".join([lines[0], *near_end]) + "\n").encode(), "csv")
    assert (report.rows, report.scored) == (1000, 999)
    assert report.errors[0].row == 997 and "runs to the end of the input" in report.errors[0].reason

    parts = lines[4].split(",")
    parts[1] = f'"{parts[1]}\nline two, still the id\n"'
    quoted = [lines[0], *lines[1:4], ",".join(parts)]
    report, written = score(model, "\r\n".join(quoted).encode(), "csv", limits=ReadLimits(max_record_lines=3))
    assert (report.rows, report.scored) == (4, 4)  # a value may span lines, within max_record_lines
    assert written[3]["machine_id"].endswith("\nline two, still the id\n")


def test_cr_only_line_endings_score_every_row(model, lines, records):
    report, written = score(model, "\r".join(lines).encode(), "csv")
    assert (report.rows, report.scored) == (50, 50)
    report, written = score(model, jsonl(records).replace(b"\n", b"\r"), "jsonl")
    assert (report.rows, report.scored) == (50, 50)


def test_a_field_over_the_limits_is_a_row_error_without_a_traceback(model, lines, tmp_path):
    big = lines[3].split(",")
    big[1] = "x" * (65 * 2**20)  # more than csv's own 64 MiB field limit
    f = tmp_path / "big.csv"
    f.write_text("\n".join([*lines[:3], ",".join(big), *lines[4:]]) + "\n")
    r = runtime("score", model.bundle_dir, "--input", f, "--on-error", "skip", "--output", os.devnull)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "scored 49 row(s), skipped 1" in r.stderr
    assert "row 3: is longer than the limit of 1,048,576 bytes" in r.stderr

    long_value = lines[3].replace(",M-", ",M-" + "9" * 100, 1)
    report, _ = score(model, "\n".join([*lines[:3], long_value, *lines[4:]]).encode(), "csv",
                      limits=ReadLimits(max_value_chars=50))
    assert report.bad == 1 and "value of 'machine_id' is 106 characters long" in report.errors[0].reason


def test_a_key_absent_from_a_whole_chunk_does_not_refuse_the_input(model, records):
    lacking = [{k: v for k, v in r.items() if k != "rpm"} for r in records[:5]]
    report, written = score(model, jsonl(lacking + records[5:10]), "jsonl", chunk_rows=5)
    assert (report.rows, report.scored, report.bad) == (10, 5, 5)
    assert {e.column for e in report.errors} == {"rpm"} and [e.row for e in report.errors] == [1, 2, 3, 4, 5]


def test_empty_csv_and_empty_jsonl_are_the_same_error(model, demo_bundle, tmp_path):
    for fmt in ("csv", "jsonl"):
        f = tmp_path / f"empty.{fmt}"
        f.write_text("")
        r = runtime("score", demo_bundle, "--input", f, "--on-error", "skip")
        assert r.returncode == 2 and "the input is empty" in r.stderr and "Traceback" not in r.stderr
        for blank in (b"\n \n", b"\r\n\r\n", b"\xef\xbb\xbf"):
            with pytest.raises(InputError, match="the input is empty"):
                score(model, blank, fmt)


def test_deep_json_and_lone_surrogates_are_row_errors(model, records):
    odd = dict(records[1], machine_type="\ud800")
    lines = [json.dumps(records[0]), "[" * 100_000 + "]" * 100_000, '{"a": ' * 50 + "1" + "}" * 50,
             json.dumps(odd), json.dumps(records[2])]
    report, written = score(model, "\n".join(lines).encode(), "jsonl")
    assert (report.rows, report.scored) == (5, 2)
    reasons = [e.reason for e in report.errors]
    assert "is nested 100000 levels deep, more than the limit of 32 (max_depth)" in reasons[0]
    assert "nested 50 levels deep" in reasons[1] and "lone UTF-16 surrogate" in reasons[2]
    with pytest.raises(RowError, match="column 'machine_type': .* lone UTF-16 surrogate"):
        model.predict([odd])  # the library refuses it too, before the engine sees it
    assert len(model.predict([odd, records[2]], on_error="skip")) == 1


def test_nothing_scored_is_an_error_and_a_bad_limit_is_named(demo_bundle, demo_rows):
    r = runtime("score", demo_bundle, "--input", demo_rows, "--on-error", "skip", "--max-value-chars", "1")
    assert r.returncode == 2 and "none of its 50 row(s) could be scored" in r.stderr
    assert "read 50 row(s): scored 0 row(s), skipped 50" in r.stderr and "(max_value_chars)" in r.stderr
    bad = runtime("score", demo_bundle, "--input", demo_rows, "--max-depth", "0")
    assert bad.returncode == 2 and "max_depth = 0 (from flag --max-depth)" in bad.stderr


# --- outputs -----------------------------------------------------------------------------------

def write_through(path, text="scored\n", source="-"):
    with output_file(str(path), source) as out:
        out.write(text)


def test_a_device_or_fifo_output_is_written_not_replaced(demo_bundle, demo_rows, tmp_path):
    r = runtime("score", demo_bundle, "--input", demo_rows, "--output", os.devnull)
    assert r.returncode == 0, r.stderr
    assert stat.S_ISCHR(os.lstat(os.devnull).st_mode)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    write_through(fifo, "a,b\n1,2\n")
    reader.join(30)
    assert got == [b"a,b\n1,2\n"] and stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_planted_partial_link_is_not_followed_and_the_mode_is_kept(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    out = tmp_path / "scored.csv"
    (tmp_path / "scored.csv.partial").symlink_to(victim)
    (tmp_path / ".scored.csv.partial").symlink_to(victim)
    out.write_text("old results\n")
    out.chmod(0o600)
    write_through(out)
    assert victim.read_text() == "precious\n" and out.read_text() == "scored\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [".scored.csv.partial", "scored.csv",
                                                          "scored.csv.partial", "victim"]  # no temporary left
    with pytest.raises(RuntimeError), output_file(str(out), "-") as f:
        f.write("half")
        raise RuntimeError("scoring failed")
    assert out.read_text() == "scored\n" and len(list(tmp_path.iterdir())) == 4


def test_an_output_that_is_a_folder_or_a_link_is_a_clean_error(demo_bundle, demo_rows, tmp_path):
    r = runtime("score", demo_bundle, "--input", demo_rows, "--output", tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "is a folder; give the path of a file" in r.stderr
    target = tmp_path / "target.csv"
    target.write_text("keep\n")
    (tmp_path / "link.csv").symlink_to(target)
    with pytest.raises(InputError, match="is a symbolic link .* give the target itself"):
        write_through(tmp_path / "link.csv")
    assert target.read_text() == "keep\n"
    with pytest.raises(InputError, match="is the input file"):
        write_through(target, source=str(target))


def test_input_columns_named_like_output_columns_are_refused(model, lines, records):
    with pytest.raises(InputError, match=r"has column\(s\) 'prediction', which the scored output adds itself .* "
                                         "rename them in the input"):
        score(model, "\n".join([lines[0] + ",prediction", *(x + ",1" for x in lines[1:])]).encode(), "csv")
    with pytest.raises(InputError, match=r"row 3, has column\(s\) 'proba_1'"):
        score(model, jsonl([*records[:2], dict(records[2], proba_1=0.5)]), "jsonl")


# --- the run path ------------------------------------------------------------------------------

def test_line_parser_never_raises_and_bounds_each_line():
    limits = ReadLimits(max_line_bytes=64, max_value_chars=8, max_depth=3)
    p = LineParser("jsonl", limits)
    cases = [b'{"a": 1}', b"[" * 100_000, b'{"a": "\\ud800"}', b'{"a": "' + b"x" * 9 + b'"}', b"\xff{}", b"x" * 65,
             b'{"a": [[[1]]]}', b"   ", "\ud800", 17]
    items = [p.parse(c) for c in cases]
    assert items[0].record == {"a": 1} and items[7] is None
    assert [i.row for i in items if i is not None] == list(range(1, 10))
    assert all(i.error is not None for i in items[1:7] + items[8:])
    assert "nested 4 levels deep" in items[6].error.reason and "not bytes or text" in items[9].error.reason
    csv_parser = LineParser("csv", limits)
    got = csv_parser.parse_all(b"a,b\r\n1,2\r3,\"4\r\n5\r\n\xff,1\n1,2,3\n")
    assert [i.record for i in got] == [{"a": "1", "b": "2"}, None, None, None, None]
    assert "not closed on its line" in got[1].error.reason and "not UTF-8" in got[3].error.reason


def test_a_bare_cr_inside_a_csv_row_does_not_kill_the_reader(tmp_path, lines):
    f = tmp_path / "cr.csv"
    f.write_bytes(("\n".join(lines[:5]) + "\n").encode().replace(b",M-", b",\rM-", 1) + b'1,"2\r\n')
    q = queue.Queue()
    src = FileSource(str(f), "csv", q, follow=False, stop=threading.Event())
    src.start()
    items = []
    while (item := q.get(timeout=10)) is not END:
        items.append(item)
    assert src.error is None and [i.row for i in items] == [1, 2, 3, 4, 5, 6]  # row 1 cut in two at its CR
    assert [i.error is None for i in items] == [False, False, True, True, True, False]


def settings(tmp_path, **flags):
    return resolve_settings({"device_id": "pi-07", "fleet": "plant-a", "outbox": str(tmp_path / "outbox.db"),
                             **flags}, environ={})


def test_run_reads_csv_by_name_and_counts_bad_rows_alike_everywhere(demo_bundle, lines, tmp_path, caplog):
    rows = [x.encode() for x in lines[1:]]
    rows[2] = rows[2].replace(b"M-", b"M\xff-", 1)  # not UTF-8
    rows[5] = rows[5].replace(b",M-", b',"M-', 1)  # a quote not closed on its line
    rows[7] += b",extra"  # one field too many
    rows[9] = rows[9].rsplit(b",", 1)[0] + b",lots"  # not a number
    f = tmp_path / "readings.csv"
    f.write_bytes(b"\n".join([lines[0].encode(), *rows]) + b"\n")
    windows = tmp_path / "windows.jsonl"
    s = settings(tmp_path, input=str(f), drift_output=str(windows), window_rows=20, min_rows=30)
    assert s.mqtt is None and s.run.format == "csv"
    with caplog.at_level(logging.INFO, logger="edgeml_runtime"):
        stats = Agent(demo_bundle, s).run()
    written = [json.loads(x) for x in windows.read_text().splitlines()]
    assert (stats.rows, stats.scored, stats.bad_rows) == (50, 46, 4)
    assert sum(w["bad_rows"] for w in written) == stats.bad_rows and sum(w["rows"] for w in written) == stats.scored
    assert [w["seq"] for w in written] == list(range(stats.windows)) and written[0]["model"]["name"] == "demo"
    assert "no verdict: fewer scored rows than min_rows = 30" in caplog.text


def test_run_says_how_many_windows_wait_in_the_outbox(demo_bundle, demo_rows, tmp_path, caplog):
    s = settings(tmp_path, input=str(demo_rows), broker=NOWHERE, window_rows=20)
    with caplog.at_level(logging.INFO, logger="edgeml_runtime"):
        stats = Agent(demo_bundle, s).run()
    assert stats.backlog == stats.windows == 3
    assert "done: 50 rows, 50 scored, 0 bad, 3 drift windows; 3 window(s) wait in the outbox" in caplog.text


def test_a_reader_that_dies_ends_the_run_with_an_error(demo_bundle, demo_rows, tmp_path):
    stream = tmp_path / "stream.csv"
    stream.write_text(demo_rows.read_text())
    agent = Agent(demo_bundle, settings(tmp_path, input=str(stream), follow=True, drift_output=str(tmp_path / "w")))
    failure: list = []

    def run():
        try:
            agent.run()
        except SourceError as exc:
            failure.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    wait_until(lambda: agent.stats.scored == 50, what="the file's rows scored")
    stream.rename(tmp_path / "rotated.csv")
    stream.mkdir()  # what the rotation left where the input was cannot be read
    runner.join(30)
    assert not runner.is_alive() and failure, "the run ended as if the input had ended"
    assert "failed after 50 rows (IsADirectoryError" in str(failure[0]) and "rest of the input was not read" in str(
        failure[0])
    assert (tmp_path / "w").read_text().count("\n") == 1  # the open window was still written


def test_run_exit_status_tells_the_truth(demo_bundle, demo_rows, tmp_path):
    common = ("run", demo_bundle, "--device-id", "d", "--fleet", "f", "--drift-output", tmp_path / "w.jsonl")
    dead = runtime(*common, "--input", tmp_path)
    assert dead.returncode == 1 and "reading" in dead.stderr and "failed after 0 rows" in dead.stderr
    wrong = runtime(*common, "--input", demo_rows, "--format", "jsonl")
    assert wrong.returncode == 2 and "none of the 51 row(s) read could be scored" in wrong.stderr
    ok = runtime(*common, "--input", demo_rows)
    assert ok.returncode == 0 and "done: 50 rows, 50 scored, 0 bad" in ok.stderr
    nobroker = runtime("run", demo_bundle, "--device-id", "d", "--fleet", "f", "--input", demo_rows)
    assert nobroker.returncode == 2 and "no broker given" in nobroker.stderr and "--drift-output" in nobroker.stderr


def test_settings_without_a_broker_refuse_what_needs_one(tmp_path):
    with pytest.raises(SettingsError, match="input_topic = 'sensors/x' needs a broker"):
        settings(tmp_path, drift_output="-", input_topic="sensors/x")
    with pytest.raises(SettingsError, match="drift_output = '-'.*cannot share stdout"):
        settings(tmp_path, drift_output="-", output="-")
    assert settings(tmp_path, drift_output="-", max_depth=4).run.limits.max_depth == 4
    with pytest.raises(SettingsError, match=r"max_line_bytes = 8 \(from flag --max-line-bytes\)"):
        settings(tmp_path, drift_output="-", max_line_bytes=8)


def test_runs_streaming_outputs_follow_no_link_and_keep_the_mode(demo_bundle, demo_rows, tmp_path):
    """``run`` writes scored records and drift windows as it goes (no rename at the end), yet a link planted at
    either path is not written through, an existing file keeps its mode, and the input is not overwritten."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "scored.csv").symlink_to(victim)
    with pytest.raises(InputError, match="--output .*scored.csv is a symbolic link"):
        Agent(demo_bundle, settings(tmp_path, input=str(demo_rows), output=str(tmp_path / "scored.csv"),
                                    drift_output=str(tmp_path / "w.jsonl"))).run()
    (tmp_path / "planted.jsonl").symlink_to(victim)
    with pytest.raises(InputError, match="--drift-output .*planted.jsonl is a symbolic link"):
        Agent(demo_bundle, settings(tmp_path, input=str(demo_rows), drift_output=str(tmp_path / "planted.jsonl"))).run()
    with pytest.raises(InputError, match="is the input file"):
        Agent(demo_bundle, settings(tmp_path, input=str(demo_rows), output=str(demo_rows),
                                    drift_output=str(tmp_path / "w2.jsonl"))).run()
    assert victim.read_text() == "precious\n" and demo_rows.read_text().count("\n") == 51
    out, windows = tmp_path / "out.csv", tmp_path / "windows.jsonl"
    out.write_text("old\n")
    out.chmod(0o600)
    windows.write_text('{"kept": true}\n')
    windows.chmod(0o640)
    stats = Agent(demo_bundle, settings(tmp_path, input=str(demo_rows), output=str(out),
                                        drift_output=str(windows))).run()
    assert stats.scored == 50 and out.read_text().count("\n") == 51 and "old" not in out.read_text()
    assert windows.read_text().startswith('{"kept": true}\n') and windows.read_text().count("\n") == 2
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and stat.S_IMODE(windows.stat().st_mode) == 0o640
