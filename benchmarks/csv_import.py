"""Import a large CSV file through a real worker, and resume a run deep into it.

    python -m benchmarks.csv_import
    python -m benchmarks.csv_import --rows 200000 --database-url postgresql+psycopg://...

It writes a CSV file of ``--rows`` rows (1,000,000 by default, about 100 MB)
in a temporary directory, starts a private ``redis-server``, stores the file
through ``mtasks.run`` (in the database storage) and has ``flask mtasks worker
--burst`` import it, once row by row and once in batches of 1,000 rows
inserted into a table. The work horse records its resident memory when it
starts iterating and its peak (``VmHWM``) when it ends: the growth must stay
under 50 MB. Then a run paused at row ``--resume-at`` (900,000) is resumed:
the time from the start of its job to its first processed row must stay under
a second. The hand-written baselines are measured in the same run: the memory
of reading the whole file into a string, and the time to reach the row by
parsing the file from its start. Exits 1 when a limit is missed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

from benchmarks import services

ROOT = Path(__file__).resolve().parent.parent
APP = "benchmarks.csv_import_app:create_app"
MEMORY_LIMIT = 50 * 1024 * 1024
REACH_LIMIT = 1.0
MB = 1024 * 1024


def generate(path: Path, rows: int, resume_at: int) -> tuple[int, int]:
    """Write the file; return its size and the byte offset where row ``resume_at`` starts."""
    resume_offset = -1
    with open(path, "wb") as out:
        buffer: list[bytes] = [b"id,title,author,content,score\n"]
        written = len(buffer[0])
        for n in range(1, rows + 1):
            if n == resume_at:
                resume_offset = written
            line = (
                f'{n},Post title number {n},author {n % 97},"Notes on run {n}, with a comma, '
                f'and ""quotes"" too: {n * 7919 % 100003}",{n % 1000}\n'
            ).encode()
            buffer.append(line)
            written += len(line)
            if len(buffer) >= 10_000:
                out.write(b"".join(buffer))
                buffer.clear()
        out.write(b"".join(buffer))
    return written, resume_offset


def reach_by_parsing(path: Path, row: int) -> float:
    """Seconds to reach ``row`` by parsing from the start, as a reader without offsets must."""
    start = time.perf_counter()
    with open(path, newline="", encoding="utf-8") as text:
        reader = csv.reader(text)
        next(reader)
        for _ in range(row - 1):
            next(reader)
        next(reader)
    return time.perf_counter() - start


def whole_file_memory(path: Path) -> int:
    """Peak memory growth of a process that reads the whole file into a string."""
    code = (
        "import sys\n"
        "def hwm():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'): return int(line.split()[1]) * 1024\n"
        "before = hwm()\n"
        "text = open(sys.argv[1], 'rb').read().decode('utf-8')\n"
        "print(hwm() - before)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    return int(result.stdout)


class Bench:
    def __init__(self, directory: Path, database_url: str | None) -> None:
        self.directory = directory
        self.results = directory / "results.jsonl"
        self.results.touch()
        self.database_url = database_url or f"sqlite:///{directory / 'bench.db'}"

    def work(self) -> None:
        """Run ``flask mtasks worker --burst`` until the queue is empty."""
        with open(self.directory / "worker.log", "ab") as log:
            subprocess.run(
                [sys.executable, "-m", "flask", "--app", APP, "mtasks", "worker", "--burst"],
                cwd=ROOT,
                env=os.environ.copy(),
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=3600,
            )

    def events(self, run_id: int) -> dict[str, dict[str, t.Any]]:
        found: dict[str, dict[str, t.Any]] = {}
        for line in self.results.read_text().splitlines():
            event = json.loads(line)
            if event["run_id"] == run_id:
                found[event["event"]] = event
        return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--resume-at", type=int, default=None, help="default: 90%% of --rows")
    parser.add_argument("--database-url", default=None, help="default: SQLite in the temp dir")
    args = parser.parse_args(argv)
    rows = args.rows
    resume_at = args.resume_at or max(rows * 9 // 10, 1)
    if not 1 <= resume_at <= rows:
        parser.error(f"--resume-at must be between 1 and --rows ({rows})")
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m benchmarks.csv_import", *given])

    with tempfile.TemporaryDirectory(prefix="mtasks-csv-bench-") as tmp:
        bench = Bench(Path(tmp), args.database_url)
        with services.redis_server(bench.directory) as redis_url:
            os.environ.update(
                CSV_BENCH_DATABASE_URL=bench.database_url,
                CSV_BENCH_REDIS_URL=redis_url,
                CSV_BENCH_RESULTS=str(bench.results),
            )
            return _measure(bench, rows, resume_at, command)


def _measure(bench: Bench, rows: int, resume_at: int, command: str) -> int:
    import sqlalchemy as sa

    from benchmarks.csv_import_app import create_app, db, mtasks
    from flask_maintenance_tasks.models import runs_table

    path = bench.directory / "rows.csv"
    started = time.perf_counter()
    size, resume_offset = generate(path, rows, resume_at)
    generated = time.perf_counter() - started

    app = create_app()
    failures: list[str] = []
    with app.app_context():
        db.drop_all()
        db.create_all()
        baseline_memory = whole_file_memory(path)

        imports: dict[str, dict[str, t.Any]] = {}
        for name in ("ImportRowsTask", "ImportRowsInBatchesTask"):
            started = time.perf_counter()
            run = mtasks.run(name, csv_file=path)
            uploaded = time.perf_counter() - started
            db.engine.dispose()
            started = time.perf_counter()
            bench.work()
            elapsed = time.perf_counter() - started
            done = mtasks.get_run(run.id)
            assert done is not None
            if done.status != "succeeded" or done.tick_count != done.tick_total:
                raise SystemExit(f"{name} ended {done.status}: {done.error_message}")
            events = bench.events(run.id)
            growth = events["complete"]["hwm"] - events["start"]["rss"]
            imports[name] = {
                "run_id": run.id,
                "upload": uploaded,
                "elapsed": elapsed,
                "growth": growth,
            }
            if growth >= MEMORY_LIMIT:
                failures.append(f"{name}: peak memory growth {growth / MB:.1f} MB >= 50 MB")
        inserted = db.session.scalar(sa.text("SELECT count(*) FROM imported_rows"))
        if inserted != rows:
            failures.append(f"the batched import inserted {inserted} rows, not {rows}")

        # A run paused at row `resume_at`, as if it had been paused there: its
        # cursor is the position the reader saves after row resume_at - 1.
        run = mtasks.run("ImportRowsTask", csv_file=path)
        mtasks.pause(run.id)
        bench.work()  # the job finds the run pausing and leaves it paused
        with db.engine.begin() as connection:
            connection.execute(
                runs_table.update()
                .where(runs_table.c.id == run.id)
                .values(
                    cursor={"offset": resume_offset, "row": resume_at, "line": resume_at + 1},
                    tick_count=resume_at - 1,
                    tick_total=rows,
                )
            )
        mtasks.resume(run.id)
        db.engine.dispose()
        bench.work()
        done = mtasks.get_run(run.id)
        assert done is not None
        if done.status != "succeeded" or done.tick_count != rows:
            raise SystemExit(f"The resumed run ended {done.status} at {done.tick_count}")
        events = bench.events(run.id)
        first_row = events["first_row"]
        if first_row["row"] != resume_at:
            failures.append(f"the resumed run started at row {first_row['row']}, not {resume_at}")
        reach = first_row["wall"] - events["start"]["job_started"]
        iterate = first_row["wall"] - events["start"]["wall"]
        fresh = bench.events(imports["ImportRowsTask"]["run_id"])
        fresh_reach = fresh["first_row"]["wall"] - fresh["start"]["job_started"]
        parsing = reach_by_parsing(path, resume_at)
        if reach >= REACH_LIMIT:
            failures.append(f"reaching row {resume_at:,} took {reach:.3f} s >= 1 s")
        db.engine.dispose()

    by_row, by_batch = imports["ImportRowsTask"], imports["ImportRowsInBatchesTask"]
    database = bench.database_url.split(":", 1)[0].split("+", 1)[0]
    report = [
        ("CSV file", f"{rows:,} rows, {size / MB:.1f} MB", f"written in {generated:.1f} s"),
        (
            f"`mtasks.run` with the file: size, first 64 KiB checked, stored in {database}",
            f"{by_row['upload']:.2f} s",
            "",
        ),
        (
            "row by row (`csv_collection()`): work horse's peak memory growth",
            f"{by_row['growth'] / MB:.1f} MB",
            f"< 50 MB; whole file read into a string: {baseline_memory / MB:.0f} MB",
        ),
        (
            "row by row: import time",
            f"{by_row['elapsed']:.1f} s",
            f"{rows / by_row['elapsed']:,.0f} rows/s, worker start included",
        ),
        (
            "batches of 1,000 inserted (`in_batches=1000`): peak memory growth",
            f"{by_batch['growth'] / MB:.1f} MB",
            "< 50 MB",
        ),
        (
            "batches of 1,000 inserted: import time",
            f"{by_batch['elapsed']:.1f} s",
            f"{rows / by_batch['elapsed']:,.0f} rows/s into `imported_rows`",
        ),
        (
            f"run resumed at row {resume_at:,}: job start to first processed row",
            f"{reach * 1000:.0f} ms",
            f"< 1 s; parsing the file up to that row: {parsing:.2f} s "
            f"({parsing / reach:.1f}x as long)",
        ),
        (
            f"run resumed at row {resume_at:,}: iteration start to first processed row",
            f"{iterate * 1000:.0f} ms",
            "header read, then one seek",
        ),
        ("fresh run: job start to first processed row", f"{fresh_reach * 1000:.0f} ms", ""),
    ]
    print("| measure | value | limit / baseline |")
    print("|---|---:|---|")
    for measure, value, note in report:
        print(f"| {measure} | {value} | {note} |")
    print(f"\nCommand: `{command}`")
    if failures:
        for failure in failures:
            print(f"FAILED: {failure}")
        return 1
    print("Both limits held: memory growth < 50 MB, row reached in < 1 s.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
