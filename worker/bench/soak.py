"""`ecg-intake bench soak`: thousands of mixed files, good and bad, through the real service processes.

A soak finds what a short benchmark cannot: a file lost or done twice once in a few thousand, memory
that creeps up with every file, a pace that sags as the tables and queues grow. The service runs as a
user runs it (`ecg-intake run` on the embedded default, or `watch` plus an ingest and an inference
worker against Redis and PostgreSQL, laid out by `worker/services.py` as for `bench pipeline`); a feeder moves the
files into the inbox keeping a bounded backlog (a steady stream, as from a busy scanner share), and a
sampler reads the resident memory of every process of the service from /proc while it runs.

Afterwards the checks read only what a user could read: the archive and quarantine folders, the
inbox, and the database.

- no loss: every file lies in the archive or the quarantine, nothing is left in the inbox, and the
  database has one final outcome per file (its document, or a duplicate sighting for repeated bytes);
- no duplicates: one document per file, one copy of it moved, one page per page number, one
  prediction per page and model version, and every page of a done document predicted;
- memory flat: the median RSS (all processes together) of the last fifth of the run against the
  second fifth (the first is warm-up) grows less than `MEMORY_GROWTH_LIMIT`;
- throughput steady: files/s per fifth of the files, in completion order; the last fifth is at least
  `1 - THROUGHPUT_DROP_LIMIT` of the second;
- outcomes as expected: good files done, bad files quarantined (reasons counted per kind of damage).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from worker.bench.inputs import synth_inputs
from worker.bench.runs import bench_env, fresh_postgres_database, utc_seconds
from worker.db.models import Document, DocumentStatus, Event, Page, Prediction
from worker.db.session import session_scope
from worker.services import CLI, Services, embedded_layout, services_layout, start_services
from worker.settings import embedded_database_url

GOOD_KINDS = ("pdf", "dicom-waveform", "dicom-sc", "dicom-pdf", "png", "jpg", "tiff", "muse", "philips", "aecg", "scp")
BAD_KINDS = ("corrupt", "truncated", "empty", "wrong_type", "not_ecg")
DPI = 150  # of the generated pages; 200 makes a 5,000-file set of ~15 GB, mostly uncompressed DICOM captures
MEMORY_GROWTH_LIMIT = 0.10
THROUGHPUT_DROP_LIMIT = 0.25
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class InputFile:
    """One file of the soak set: its name in the inbox (unique, `s<index>-<kind><ext>`) and what it should become."""

    name: str
    kind: str
    bad: bool
    sha256: str

    @property
    def key(self) -> str:
        return self.name.split("-", 1)[0]


# ---- inputs


def _damaged(kind: str, i: int, good: list[Path], rng: random.Random) -> tuple[bytes, str]:
    """The bytes and extension of bad file number `i`, unique per file except the empty ones (all the same)."""
    if kind == "empty":
        return b"", ".pdf"
    if kind == "wrong_type":  # a note saved under an ECG's extension
        return f"Bed {i % 40 + 1}: call the cardiologist about the ECG, note {i}\n".encode(), (".pdf", ".dcm")[i % 2]
    if kind == "not_ecg":  # a CT slice from pydicom's own test files, a new instance UID each
        import pydicom
        from pydicom.data import get_testdata_file
        from pydicom.uid import generate_uid

        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["ecg-intake-soak", str(i)])
        buffer = io.BytesIO()
        ds.save_as(buffer)
        return buffer.getvalue(), ".dcm"
    sources = [p for p in good if p.suffix in ((".png",) if kind == "corrupt" else (".pdf", ".png", ".dcm"))]
    source = sources[i % len(sources)]
    data = bytearray(source.read_bytes())
    if kind == "truncated":  # a copy cut off half way
        return bytes(data[: len(data) // 2]), source.suffix
    start = len(data) // 3  # corrupt: PNG bytes overwritten in the middle; the chunk checksums no longer hold
    data[start:start + 256] = rng.randbytes(256)
    return bytes(data), source.suffix


def make_inputs(folder: Path, files: int, bad_fraction: float, seed: int = 41_000) -> list[InputFile]:
    """`files` inbox-ready files in `folder`, good ones of every kind and `bad_fraction` of them damaged, shuffled."""
    bad = round(files * bad_fraction)
    good = files - bad
    records = -(-max(good, 1) // len(GOOD_KINDS))
    synth = synth_inputs(folder.parent / f"{folder.name}-synth", records, GOOD_KINDS, "light", seed=seed, dpi=DPI)
    with open(synth / "labels.csv", newline="") as handle:
        made = [(synth / row["file"], row["format"]) for row in csv.DictReader(handle)]
    rng = random.Random(seed)
    rng.shuffle(made)
    chosen = made[:good]
    folder.mkdir(parents=True)
    plan: list[tuple[str, bool, Callable[[], tuple[bytes, str]] | Path]] = [(k, False, p) for p, k in chosen]
    for i in range(bad):
        kind = BAD_KINDS[i % len(BAD_KINDS)]
        plan.append((kind, True, lambda kind=kind, i=i: _damaged(kind, i, [p for p, _ in made], rng)))
    rng.shuffle(plan)
    inputs = []
    for index, (kind, is_bad, source) in enumerate(plan):
        if isinstance(source, Path):
            data, suffix = source.read_bytes(), "".join(source.suffixes)
        else:
            data, suffix = source()
        name = f"s{index:05d}-{kind}{suffix}"
        (folder / name).write_bytes(data)
        inputs.append(InputFile(name, kind, is_bad, hashlib.sha256(data).hexdigest()))
    shutil.rmtree(synth)
    return inputs


# ---- memory


def _process_tree(roots: dict[int, str]) -> dict[int, str]:
    """Every live process under `roots` with a role: the root's name, `inference` for `run`'s classifier, else
    `<parent role> child` (decoder children and the like)."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry.name))
    roles: dict[int, str] = {}
    stack = [(pid, name) for pid, name in roots.items()]
    while stack:
        pid, role = stack.pop()
        roles[pid] = role
        for child in children.get(pid, ()):
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            stack.append((child, "inference" if b"--under-run" in argv else f"{role.removesuffix(' child')} child"))
    return roles


def _rss_bytes(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class MemorySampler:
    """RSS of every process of the service, every `interval` seconds, in a thread, until stopped."""

    roots: Callable[[], dict[int, str]]
    progress: Callable[[], int]
    interval: float = 1.0
    samples: list[dict] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.started = time.time()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            by_role: Counter[str] = Counter()
            processes = 0
            for pid, role in _process_tree(self.roots()).items():
                rss = _rss_bytes(pid)
                if rss is not None:
                    by_role[role] += rss
                    processes += 1
            self.samples.append({"t": round(time.time() - self.started, 2), "done": self.progress(),
                                 "processes": processes, "rss_mb": round(sum(by_role.values()) / 2**20, 1),
                                 "by_role_mb": {r: round(b / 2**20, 1) for r, b in sorted(by_role.items())}})
            if self._stop.wait(self.interval):
                return

    def stop(self) -> list[dict]:
        self._stop.set()
        self._thread.join()
        return self.samples


def _fifths(values: list) -> list[list]:
    n = len(values)
    return [values[k * n // 5:(k + 1) * n // 5] for k in range(5)]


def memory_report(samples: list[dict], limit: float = MEMORY_GROWTH_LIMIT) -> dict:
    """Start, warm (second fifth's median), end (last fifth's median), peak and growth, in total and per role."""
    if len(samples) < 5:
        return {"samples": len(samples), "growth": None, "passed": False,
                "detail": f"only {len(samples)} memory samples: run longer"}
    fifths = _fifths(samples)
    warm = statistics.median(s["rss_mb"] for s in fifths[1])
    end = statistics.median(s["rss_mb"] for s in fifths[4])
    growth = (end - warm) / warm
    roles = {}
    for role in sorted({r for s in samples for r in s["by_role_mb"]}):
        second = [s["by_role_mb"][role] for s in fifths[1] if role in s["by_role_mb"]]
        last = [s["by_role_mb"][role] for s in fifths[4] if role in s["by_role_mb"]]
        if second and last:
            w, e = statistics.median(second), statistics.median(last)
            roles[role] = {"warm_mb": round(w, 1), "end_mb": round(e, 1), "growth": round((e - w) / w, 4)}
    passed = growth < limit
    return {"samples": len(samples), "interval_s": round(samples[-1]["t"] / max(len(samples) - 1, 1), 2),
            "start_mb": samples[0]["rss_mb"], "warm_mb": round(warm, 1), "end_mb": round(end, 1),
            "peak_mb": max(s["rss_mb"] for s in samples), "growth": round(growth, 4),
            "median_mb_per_fifth": [round(statistics.median(s["rss_mb"] for s in f), 1) for f in fifths],
            "by_role": roles, "limit": limit, "passed": passed,
            "detail": f"RSS median {warm:.0f} MB in the second fifth, {end:.0f} MB in the last: "
                      f"{growth:+.1%} (limit {limit:.0%})"}


def throughput_report(started: float, finished_at: list[float], limit: float = THROUGHPUT_DROP_LIMIT) -> dict:
    """Files/s per fifth of the files in completion order, from the moment the first file went in."""
    times = sorted(finished_at)
    if len(times) < 5:
        return {"files": len(times), "per_fifth": [], "passed": False, "detail": "fewer than 5 files finished"}
    rates, previous = [], started
    for part in _fifths(times):
        rates.append(round(len(part) / max(part[-1] - previous, 1e-3), 3))
        previous = part[-1]
    drop = 1 - rates[4] / rates[1]
    return {"files": len(times), "seconds": round(times[-1] - started, 1),
            "files_per_s": round(len(times) / max(times[-1] - started, 1e-3), 3), "per_fifth": rates,
            "last_vs_second": round(rates[4] / rates[1], 3),
            "min_vs_max_after_warm_up": round(min(rates[1:]) / max(rates[1:]), 3),
            "limit": limit, "passed": drop < limit,
            "detail": f"files/s per fifth {rates}; last fifth {rates[4] / rates[1]:.0%} of the second "
                      f"(limit: a drop under {limit:.0%})"}


# ---- feeding and waiting


def _backlog(inbox: Path) -> int:
    """Files dropped and not yet settled: still in the inbox, or claimed and not yet moved out."""
    claimed = inbox / ".claimed"
    return (sum(1 for e in os.scandir(inbox) if e.is_file())
            + (sum(1 for e in os.scandir(claimed) if e.is_file()) if claimed.exists() else 0))


def _feed_and_wait(staged: Path, inputs: list[InputFile], inbox: Path, processes: Callable[[], list],
                   backlog: int, stall: float, state: dict) -> float:
    """Move every file into the inbox, at most `backlog` unsettled at a time, until all are settled.

    Returns the moment the first file went in. Stops early (state["stopped"] says why) when a service process
    exits or nothing settles for `stall` seconds; the checks then count what did not come out.
    """
    started = time.time()
    fed, settled_before, moved_at = 0, -1, time.monotonic()
    while True:
        waiting = _backlog(inbox)
        while fed < len(inputs) and waiting < backlog:
            os.replace(staged / inputs[fed].name, inbox / inputs[fed].name)  # a complete file appears at once
            fed, waiting = fed + 1, waiting + 1
        state["done"], state["fed"] = fed - waiting, fed
        if fed == len(inputs) and waiting == 0:
            return started
        if state["done"] != settled_before:
            settled_before, moved_at, state["settled_at"] = state["done"], time.monotonic(), time.time()
        dead = [p.args for p in processes() if p.poll() is not None]
        if dead or time.monotonic() - moved_at > stall:
            state["stopped"] = (f"a service process exited: {dead}" if dead else
                                f"nothing settled for {stall:.0f} s at {state['done']} of {len(inputs)} files")
            return started
        time.sleep(0.2)


# ---- checks


def _placed(home: Path) -> dict[str, list[str]]:
    """Where each soak file's original lies now, by key: `archive`, `quarantine`, or their `duplicates` folders."""
    places: dict[str, list[str]] = defaultdict(list)
    for root in ("archive", "quarantine"):
        for path in (home / root).rglob("*"):
            if path.is_file() and "__s" in path.name and not path.name.endswith(".reason.json"):
                where = f"{root}/duplicates" if "duplicates" in path.relative_to(home / root).parts else root
                places[path.name.split("__", 1)[1].split("-", 1)[0]].append(where)
    return places


def _database_facts(url: str) -> dict:
    with session_scope(url) as session:
        documents = session.execute(select(Document.id, Document.sha256, Document.path, Document.status,
                                           Document.reason, Document.processed_at)).all()
        sightings = session.execute(select(Event.document_id, Event.at, Event.details)
                                    .where(Event.action == "duplicate_sighting")).all()
        redone = dict(session.execute(select(Event.action, func.count()).where(
            Event.action.in_(("decoded_again", "retried"))).group_by(Event.action)).all())
        page_dupes = session.scalar(select(func.count()).select_from(
            select(Page.document_id).group_by(Page.document_id, Page.page_no)
            .having(func.count() > 1).subquery())) or 0
        prediction_dupes = session.scalar(select(func.count()).select_from(
            select(Prediction.page_id).group_by(Prediction.page_id, Prediction.model_version_id)
            .having(func.count() > 1).subquery())) or 0
        pages = session.scalar(select(func.count()).select_from(Page)) or 0
        predictions = session.scalar(select(func.count()).select_from(Prediction)) or 0
        unpredicted = session.scalar(select(func.count()).select_from(Page).join(Document).where(
            Document.status == DocumentStatus.DONE, ~Page.id.in_(select(Prediction.page_id)))) or 0
        pageless_done = session.scalar(select(func.count()).select_from(Document).where(
            Document.status == DocumentStatus.DONE, ~Document.id.in_(select(Page.document_id)))) or 0
    return {"documents": documents, "sightings": sightings, "redone": redone, "page_dupes": page_dupes,
            "prediction_dupes": prediction_dupes, "pages": pages, "predictions": predictions,
            "unpredicted": unpredicted, "pageless_done": pageless_done}


def _dropped_names(names: set[str]) -> set[str]:
    """Soak file names from what is left in an inbox (a claimed file carries a `<claim id>__` prefix)."""
    return {name.rsplit("__", 1)[-1] for name in names}


def check_run(inputs: list[InputFile], inbox: Path, home: Path, url: str) -> tuple[dict, list[float]]:
    """The loss, duplicate and outcome figures of one finished run, and each file's completion time (epoch s)."""
    facts = _database_facts(url)
    places = _placed(home)
    left = {p.name for p in inbox.rglob("*") if p.is_file()}
    by_sha: dict[str, list[InputFile]] = defaultdict(list)
    for item in inputs:
        by_sha[item.sha256].append(item)
    docs_by_sha = {row.sha256: row for row in facts["documents"]}
    sightings_by_doc = Counter(row.document_id for row in facts["sightings"])

    lost = [i.name for i in inputs if not places.get(i.key)]
    copies = [i.name for i in inputs if len(places.get(i.key, [])) > 1]
    missing_documents = [sha for sha in by_sha if sha not in docs_by_sha]
    not_final = [row.path for row in facts["documents"] if row.status not in DocumentStatus.FINAL]
    foreign = [row.path for row in facts["documents"] if row.sha256 not in by_sha]
    wrong_sightings = sorted(Path(docs_by_sha[sha].path).name for sha, items in by_sha.items() if sha in docs_by_sha
                             and sightings_by_doc[docs_by_sha[sha].id] != len(items) - 1)
    per_name = Counter(Path(row.path).name for row in facts["documents"])

    outcomes: dict[str, Counter] = defaultdict(Counter)
    unexpected = []
    for sha, items in by_sha.items():
        row = docs_by_sha.get(sha)
        if row is None:
            continue
        for item in items:
            outcome = row.reason or row.status
            outcomes[item.kind][outcome] += 1
            if row.status in DocumentStatus.FINAL and (row.status == DocumentStatus.QUARANTINED) != item.bad:
                unexpected.append({"file": item.name, "status": row.status, "reason": row.reason})
    finished_at = [utc_seconds(row.processed_at) for row in facts["documents"] if row.processed_at is not None]
    finished_at += [utc_seconds(row.at) for row in facts["sightings"]]

    name_of = {i.sha256: i.name for i in reversed(inputs)}
    affected = ({*lost, *_dropped_names(left)} | {name_of[sha] for sha in missing_documents}
                | {Path(path).name for path in not_final} | set(wrong_sightings))
    loss = {"lost": len(lost), "lost_files": lost[:20], "left_in_inbox": sorted(left)[:20],
            "documents_missing": len(missing_documents), "not_final": len(not_final), "not_final_files": not_final[:20],
            "sightings_wrong": len(wrong_sightings), "sightings_wrong_files": wrong_sightings[:20]}
    loss["total"] = len(affected)  # files with any of the above, each counted once
    duplicates = {"documents_per_file": sum(n - 1 for n in per_name.values() if n > 1),
                  "foreign_documents": len(foreign), "copies_moved": len(copies), "copies_files": copies[:20],
                  "pages": facts["page_dupes"], "predictions": facts["prediction_dupes"]}
    duplicates["total"] = sum(v for k, v in duplicates.items() if isinstance(v, int))
    result = {
        "files": len(inputs), "bad_files": sum(i.bad for i in inputs), "distinct_contents": len(by_sha),
        "documents": len(facts["documents"]), "duplicate_sightings": len(facts["sightings"]),
        "pages": facts["pages"], "predictions": facts["predictions"],
        "pages_without_prediction": facts["unpredicted"], "done_without_pages": facts["pageless_done"],
        "redone": facts["redone"], "loss": loss, "duplicates": duplicates,
        "outcomes_by_kind": {k: dict(v) for k, v in sorted(outcomes.items())},
        "unexpected_outcomes": unexpected[:50], "unexpected_count": len(unexpected),
    }
    return result, finished_at


def _verdicts(result: dict) -> dict:
    loss, dupes = result["loss"], result["duplicates"]
    incomplete = result["pages_without_prediction"] + result["done_without_pages"]
    checks = {
        "no_loss": {"passed": loss["total"] == 0,
                    "detail": f"{loss['lost']} file(s) neither archived nor quarantined, {len(loss['left_in_inbox'])} "
                              f"left in the inbox, {loss['documents_missing']} without a document, "
                              f"{loss['not_final']} not final, {loss['sightings_wrong']} with a wrong sighting count"},
        "no_duplicates": {"passed": dupes["total"] == 0 and incomplete == 0,
                          "detail": f"{dupes['documents_per_file']} extra document(s), {dupes['copies_moved']} file(s) "
                                    f"moved twice, {dupes['pages']} page and {dupes['predictions']} prediction "
                                    f"duplicate(s), {incomplete} done page(s)/document(s) without a prediction"},
        "memory_flat": {"passed": result["memory"]["passed"], "detail": result["memory"]["detail"]},
        "throughput_steady": {"passed": result["throughput"]["passed"], "detail": result["throughput"]["detail"]},
        "outcomes_expected": {"passed": result["unexpected_count"] == 0,
                              "detail": f"{result['unexpected_count']} good file(s) quarantined or bad file(s) done"},
    }
    if result.get("stopped"):
        checks["finished"] = {"passed": False, "detail": result["stopped"]}
    return checks


# ---- one backend


def _soak(backend: str, inputs: list[InputFile], staged: Path, work: Path, home: Path, url: str,
          start: Callable[[Path], Services], backlog: int, interval: float, stall: float,
          memory_limit: float = MEMORY_GROWTH_LIMIT, throughput_limit: float = THROUGHPUT_DROP_LIMIT) -> dict:
    """Start the service, feed it every file while sampling its memory, stop it gracefully, then check."""
    inbox = work / f"{backend}-inbox"
    inbox.mkdir()
    state: dict = {"done": 0, "fed": 0}
    with start(inbox) as services:
        processes = services.processes
        sampler = MemorySampler(lambda: {p.pid: name for name, p in processes.items() if p.poll() is None},
                                lambda: state["done"], interval)
        try:
            started = _feed_and_wait(staged, inputs, inbox, lambda: list(processes.values()), backlog, stall, state)
            ended = time.time()
            samples = sampler.stop()
        finally:
            sampler.stop()
    time.sleep(1)
    fed = inputs[:state["fed"]]  # after an early stop the rest never went in: not the service's to lose
    result, finished_at = check_run(fed, inbox, home, url)
    last = state.get("settled_at", ended)  # after a stall, the idle wait would flatten the last fifth
    in_run = [s for s in samples if started - sampler.started <= s["t"] <= last - sampler.started]
    restarts = sum(path.read_text(errors="replace").count("starting it again")
                   for path in (work / "logs").glob(f"{backend}-*.log"))
    result.update({"backend": backend, "not_fed": len(inputs) - len(fed), "seconds": round(ended - started, 1),
                   "files_per_s": round(len(fed) / max(ended - started, 1e-3), 3), "inference_restarts": restarts,
                   "memory": memory_report(in_run, memory_limit),
                   "throughput": throughput_report(started, finished_at, throughput_limit),
                   "stopped": state.get("stopped"), "samples": samples})
    if state.get("stopped"):
        result["log_tail"] = services.tail(30)
    result["checks"] = _verdicts(result)
    result["passed"] = all(c["passed"] for c in result["checks"].values())
    return result


def _embedded(inputs: list[InputFile], staged: Path, work: Path, bundle_dir: Path, engine: dict, **options) -> dict:
    home = work / "embedded-home"
    env = bench_env(work, home, bundle_dir, engine)

    def start(inbox: Path) -> Services:
        return start_services(embedded_layout(inbox), env, work / "logs", log_prefix="embedded-")

    return _soak("embedded", inputs, staged, work, home, embedded_database_url(home), start, **options)


def _services(inputs: list[InputFile], staged: Path, work: Path, bundle_dir: Path, engine: dict, database_url: str,
              redis_url: str, **options) -> dict:
    home = work / "services-home"
    with fresh_postgres_database(database_url) as url:
        env = bench_env(work, home, bundle_dir, engine, ECG_INTAKE_DATABASE_URL=url, ECG_INTAKE_BROKER_URL=redis_url)
        subprocess.run([*CLI, "db", "upgrade"], env=env, check=True, capture_output=True)

        def start(inbox: Path) -> Services:
            return start_services(services_layout(inbox, engine["batch_size"]), env, work / "logs",
                                  log_prefix="services-")

        return _soak("services", inputs, staged, work, home, url, start, **options)


def bench_soak(bundle_dir: Path, files: int = 5000, bad_fraction: float = 0.05, backend: str = "embedded",
               database_url: str | None = None, redis_url: str | None = None, engine: str = "auto",
               batch_size: int = 8, backlog: int = 64, interval: float = 1.0, stall: float = 300,
               progress: Callable[[str], None] = lambda _: None,
               checkpoint: Callable[[dict], None] = lambda _: None, memory_limit: float = MEMORY_GROWTH_LIMIT,
               throughput_limit: float = THROUGHPUT_DROP_LIMIT, keep: Path | None = None) -> dict:
    """Generate the soak set once and push it through each requested backend in turn (never both at once).

    `checkpoint` gets the result after each backend: a long soak's first half is kept if the second dies.
    `keep`: work there and leave the inboxes, homes (archive, quarantine, embedded database) and logs behind, so
    what the bench reports can be audited from outside it. The limits: a short run's warm-up dominates its memory
    and throughput figures, so a test loosens them to make its exit code depend on loss and outcomes only.
    """
    if backend not in ("embedded", "services", "both"):
        raise ValueError(f"backend must be embedded, services or both, not {backend!r}")
    if backend != "embedded" and not (database_url and redis_url):
        raise ValueError("the services backend needs --database-url (a PostgreSQL server; a fresh database is made "
                         "on it and dropped) and --redis-url: this benchmark does not start servers")
    options = {"backlog": backlog, "interval": interval, "stall": stall, "memory_limit": memory_limit,
               "throughput_limit": throughput_limit}
    chosen = {"engine": engine, "batch_size": batch_size}
    result: dict = {"benchmark": "soak", "files": files, "bad_fraction": bad_fraction, "generated_dpi": DPI,
                    "backlog": backlog, "cpu_count": os.cpu_count(), "engine": chosen, "backends": {}}
    with contextlib.nullcontext(str(keep)) if keep else tempfile.TemporaryDirectory(prefix="ecg-soak-") as tmp:
        work = Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        progress(f"generating {files} files")
        t0 = time.monotonic()
        inputs = make_inputs(work / "pool", files, bad_fraction)
        result["generate_seconds"] = round(time.monotonic() - t0, 1)
        result["bad_files"] = sum(i.bad for i in inputs)
        result["distinct_contents"] = len({i.sha256 for i in inputs})
        result["kinds"] = dict(sorted(Counter(i.kind for i in inputs).items()))
        runs = [b for b in ("embedded", "services") if backend in (b, "both")]
        for i, name in enumerate(runs):
            staged = work / "pool"
            if i < len(runs) - 1:  # keep the pool for the next run
                staged = work / f"{name}-staged"
                shutil.copytree(work / "pool", staged)
            progress(f"soaking {name}")
            if name == "embedded":
                result["backends"][name] = _embedded(inputs, staged, work, bundle_dir, chosen, **options)
            else:
                result["backends"][name] = _services(inputs, staged, work, bundle_dir, chosen, database_url,
                                                     redis_url, **options)
            if keep is None:
                shutil.rmtree(work / f"{name}-home", ignore_errors=True)  # the archived copies: disk for the next run
            result["passed"] = all(b["passed"] for b in result["backends"].values())
            result["complete"] = i == len(runs) - 1
            checkpoint(result)
    return result
