"""python -m esi.data.convert: CLI, rejected records, resuming after SIGKILL, settings checks."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import wfdb

from esi.data.convert import convert, resample_ecg
from esi.data.leads import STANDARD_LEADS
from esi.data.reader import read_ecg
from esi.data.store import ECGStore, StoreSettingsError

REPO = Path(__file__).resolve().parents[1]
N_RECORDS = 48


def run_cli(*args: str, env: dict | None = None, **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esi.data.convert", *args], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=120, **popen)


def link_records(ptbxl_dir: Path, folder: Path, numbers, nested: bool = True) -> list[str]:
    """Symlink PTB-XL 100 Hz records into `folder` (in sub-folders when nested); return their record ids."""
    ids = []
    for n in numbers:
        sub = folder / (f"site{n % 2}" if nested else "")
        sub.mkdir(parents=True, exist_ok=True)
        name = f"{n:05d}_lr"
        for suffix in (".hea", ".dat"):
            (sub / (name + suffix)).symlink_to(ptbxl_dir / "records100" / "00000" / (name + suffix))
        ids.append((sub / name).relative_to(folder).as_posix())
    return ids


@pytest.fixture(scope="module")
def reference_store(ptbxl_dir, tmp_path_factory) -> ECGStore:
    """The first 48 PTB-XL records at 100 Hz, converted in one uninterrupted run (chunks of 8)."""
    out = tmp_path_factory.mktemp("reference")
    convert("ptbxl", ptbxl_dir, out, fs=100, workers=1, limit=N_RECORDS, chunk_size=8, progress=False)
    return ECGStore(out)


def assert_same_store(store: ECGStore, reference: ECGStore) -> None:
    assert store.index.record_id.is_unique
    pd.testing.assert_frame_equal(store.index.drop(columns=["shard", "row"]),
                                  reference.index.drop(columns=["shard", "row"]))
    np.testing.assert_array_equal(store.read(np.arange(len(store))), reference.read(np.arange(len(reference))))


def test_cli_help_documents_every_option():
    result = run_cli("--help")
    assert result.returncode == 0
    for option in ("--source", "--input", "--record-list", "--out", "--fs", "--seconds", "--dtype", "--workers",
                   "--limit", "--allow-missing", "--chunk-size"):
        assert option in result.stdout


def test_cli_converts_a_folder_end_to_end(ptbxl_dir, tmp_path):
    ids = link_records(ptbxl_dir, tmp_path / "wfdb", range(1, 7))
    result = run_cli("--source", "folder", "--input", str(tmp_path / "wfdb"), "--out", str(tmp_path / "store"),
                     "--fs", "100", "--seconds", "10", "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert "converted 6, rejected 0, skipped as already done 0" in result.stdout
    store = ECGStore(tmp_path / "store")
    assert sorted(store.index.record_id) == sorted(ids)
    assert store.fs == 100 and store.length == 1000 and store.index.lossless.all()


def write_corrupt_records(ptbxl_dir: Path, folder: Path) -> dict[str, str]:
    """Four broken records beside good ones; returns record id -> expected words of the rejection reason."""
    folder.mkdir(parents=True, exist_ok=True)
    source = ptbxl_dir / "records100" / "00000"

    # A signal file cut in half.
    shutil.copyfile(source / "00010_lr.hea", folder / "truncated.hea")
    data = (source / "00010_lr.dat").read_bytes()
    (folder / "truncated.dat").write_bytes(data[: len(data) // 2])
    (folder / "truncated.hea").write_text((folder / "truncated.hea").read_text().replace("00010_lr", "truncated"))

    # A header whose sampling rate is not a number.
    header = (source / "00011_lr.hea").read_text().replace("00011_lr", "badrate")
    (folder / "badrate.hea").write_text(header.replace(" 12 100 1000", " 12 abc 1000", 1))
    shutil.copyfile(source / "00011_lr.dat", folder / "badrate.dat")

    # Real signals with a lead full of NaN gaps (written by wfdb as its invalid-sample value).
    physical = wfdb.rdrecord(str(source / "00012_lr")).p_signal
    physical[::7, 3] = np.nan
    wfdb.wrsamp("nan", fs=100, units=["mV"] * 12, sig_name=list(STANDARD_LEADS), p_signal=physical,
                fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(folder))

    # Only two of the twelve leads.
    two = wfdb.rdrecord(str(source / "00013_lr"), physical=False, channels=[0, 1])
    wfdb.wrsamp("twolead", fs=100, units=["mV"] * 2, sig_name=["I", "II"], d_signal=two.d_signal, fmt=["16"] * 2,
                adc_gain=[1000.0] * 2, baseline=[0] * 2, write_dir=str(folder))
    return {"truncated": "truncated", "badrate": "sampling rate", "nan": "invalid", "twolead": "missing lead"}


def test_corrupt_records_are_rejected_with_their_reason_and_good_ones_converted(ptbxl_dir, tmp_path):
    good = link_records(ptbxl_dir, tmp_path / "mixed", range(1, 6), nested=False)
    expected = write_corrupt_records(ptbxl_dir, tmp_path / "mixed")
    summary = convert("folder", tmp_path / "mixed", tmp_path / "store", fs=100, workers=1, progress=False)
    assert (summary.converted, summary.rejected, summary.skipped) == (5, 4, 0)

    store = ECGStore(tmp_path / "store")
    assert sorted(store.index.record_id) == sorted(good)
    rejected = store.rejected  # read as strings: the record named "nan" stays "nan"
    assert list(rejected.columns) == ["record_id", "path", "reason"]
    reasons = dict(zip(rejected.record_id, rejected.reason))
    assert set(reasons) == set(expected)
    for record_id, words in expected.items():
        assert words in reasons[record_id].lower(), reasons[record_id]


def test_cli_prints_the_rejected_count(ptbxl_dir, tmp_path):
    link_records(ptbxl_dir, tmp_path / "mixed", range(1, 3), nested=False)
    write_corrupt_records(ptbxl_dir, tmp_path / "mixed")
    result = run_cli("--source", "folder", "--input", str(tmp_path / "mixed"), "--out", str(tmp_path / "store"),
                     "--fs", "100", "--workers", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "converted 2, rejected 4" in result.stdout


def freeze_mid_chunk(process: subprocess.Popen, out: Path, deadline_s: float = 60) -> int:
    """Stop (SIGSTOP) the conversion's whole session at a moment when at least one chunk is committed and another
    is half-written, and keep it stopped; returns the number of committed chunks. While every process is stopped
    the store's files cannot change, so what the test sees is what a SIGKILL at that moment leaves."""
    deadline = time.monotonic() + deadline_s
    while process.poll() is None and time.monotonic() < deadline:
        if list((out / "parts").glob("*.json")) and list((out / "shards").glob("*.bin.tmp")):
            os.killpg(process.pid, signal.SIGSTOP)
            family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
            while any(p.status() not in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE) for p in family):
                time.sleep(0.001)
            committed = len(list((out / "parts").glob("*.json")))
            if list((out / "shards").glob("*.bin.tmp")):
                return committed
            os.killpg(process.pid, signal.SIGCONT)  # between two chunks after all: let it run on
        time.sleep(0.005)
    raise AssertionError(f"the conversion into {out} ended (or stalled) before it could be stopped mid-chunk")


def test_run_killed_mid_chunk_resumes_to_the_same_store(ptbxl_dir, tmp_path, reference_store):
    out = tmp_path / "store"
    args = ("--source", "ptbxl", "--input", str(ptbxl_dir), "--out", str(out), "--fs", "100", "--limit",
            str(N_RECORDS), "--chunk-size", "8", "--workers", "2", "--no-progress")
    # SIGKILL from outside, as an out-of-memory kill or `kill -9` does: the CLI, its fork server and both
    # workers at once, while a chunk is half-written.
    process = subprocess.Popen([sys.executable, "-m", "esi.data.convert", *args], cwd=REPO,
                               start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        finished_before = freeze_mid_chunk(process, out)
    finally:
        _kill_session(process.pid)
        returncode = process.wait(timeout=120)
    assert returncode == -signal.SIGKILL
    with pytest.raises(StoreSettingsError, match="has not finished"):
        ECGStore(out)
    assert list((out / "shards").glob("*.bin.tmp")), "the kill should leave a half-written shard"
    assert 0 < finished_before < N_RECORDS // 8

    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"skipped as already done {finished_before * 8}" in resumed.stdout
    assert f"converted {N_RECORDS - finished_before * 8}," in resumed.stdout
    assert_same_store(ECGStore(out), reference_store)


def _kill_session(session_id: int) -> None:
    try:
        os.killpg(session_id, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_run_killed_from_outside_resumes_to_the_same_store(ptbxl_dir, tmp_path, reference_store):
    out = tmp_path / "store"
    command = [sys.executable, "-m", "esi.data.convert", "--source", "ptbxl", "--input", str(ptbxl_dir),
               "--out", str(out), "--fs", "100", "--limit", str(N_RECORDS), "--chunk-size", "8", "--workers", "2",
               "--no-progress"]
    process = subprocess.Popen(command, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list((out / "parts").glob("*.json")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    _kill_session(process.pid)  # the CLI, its fork server and its workers
    process.wait()

    summary = convert("ptbxl", ptbxl_dir, out, fs=100, workers=2, limit=N_RECORDS, chunk_size=8, progress=False)
    assert summary.converted + summary.skipped == N_RECORDS
    assert_same_store(ECGStore(out), reference_store)


def test_second_run_skips_everything(ptbxl_dir, tmp_path):
    first = convert("ptbxl", ptbxl_dir, tmp_path, fs=100, workers=1, limit=20, chunk_size=8, progress=False)
    second = convert("ptbxl", ptbxl_dir, tmp_path, fs=100, workers=1, limit=20, progress=False)
    assert (first.converted, first.skipped) == (20, 0)
    assert (second.converted, second.rejected, second.skipped) == (0, 0, 20)
    assert len(ECGStore(tmp_path)) == 20


def test_a_longer_list_converts_only_the_new_records(ptbxl_dir, tmp_path):
    convert("ptbxl", ptbxl_dir, tmp_path, fs=100, workers=1, limit=12, chunk_size=8, progress=False)
    more = convert("ptbxl", ptbxl_dir, tmp_path, fs=100, workers=1, limit=20, progress=False)
    # Chunk 0 (records 1-8) is reused; chunk 1 grew from 4 to 8 records and is redone; chunk 2 is new.
    assert (more.skipped, more.converted) == (8, 12)
    assert list(ECGStore(tmp_path).index.record_id) == [str(i) for i in range(1, 21)]


def test_resuming_with_other_settings_is_refused(ptbxl_dir, tmp_path):
    convert("ptbxl", ptbxl_dir, tmp_path, fs=100, workers=1, limit=4, progress=False)
    with pytest.raises(StoreSettingsError, match=r"different settings.*fs: store has 100.0, requested 250.0"):
        convert("ptbxl", ptbxl_dir, tmp_path, fs=250, workers=1, limit=4, progress=False)
    result = run_cli("--source", "ptbxl", "--input", str(ptbxl_dir), "--out", str(tmp_path), "--fs", "100",
                     "--dtype", "float16", "--limit", "4")
    assert result.returncode == 2
    assert "dtype: store has 'int16', requested 'float16'" in result.stderr


def test_a_folder_that_is_not_a_store_is_refused(ptbxl_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("my files")
    with pytest.raises(StoreSettingsError, match="not empty and is not an ECG store"):
        convert("ptbxl", ptbxl_dir, tmp_path, fs=100, workers=1, limit=2, progress=False)


def test_quality_flags_reach_the_index(ptbxl_dir, tmp_path):
    """A clipped and a flat record among clean ones: the store's index flags exactly those two."""
    folder = tmp_path / "wfdb"
    link_records(ptbxl_dir, folder, range(1, 4), nested=False)
    digital = wfdb.rdrecord(str(ptbxl_dir / "records100" / "00000" / "00004_lr"), physical=False).d_signal
    clipped, flat = digital.copy(), digital.copy()
    clipped[:, 1] = np.minimum(clipped[:, 1], np.percentile(clipped[:, 1], 95))  # 0.5 s of lead II at a ceiling
    flat[:, 7] = 120  # V2 disconnected
    for name, values in (("clipped", clipped), ("flat", flat)):
        wfdb.wrsamp(name, fs=100, units=["mV"] * 12, sig_name=list(STANDARD_LEADS), d_signal=values,
                    fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(folder))
    convert("folder", folder, tmp_path / "store", fs=100, workers=1, progress=False)
    index = ECGStore(tmp_path / "store").index.set_index("record_id")
    assert list(index.index[index.quality_saturated]) == ["clipped"]
    assert list(index.index[index.quality_flat_lead]) == ["flat"]
    assert index.lossless.all()


def test_resample_ecg_matches_the_resampling_reader(ptbxl_dir):
    record = ptbxl_dir / "records500" / "00000" / "00001_hr"
    resampled, expected = resample_ecg(read_ecg(record), 250), read_ecg(record, fs=250)
    np.testing.assert_array_equal(resampled.signal, expected.signal)
    assert (resampled.fs, resampled.fs_source, resampled.notes) == (250, 500, expected.notes)
