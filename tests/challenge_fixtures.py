"""Small PhysioNet Challenge trees built from real PTB-XL records, byte for byte in the layout the challenge ships.

Not a test file: tests (and bench/bench_mat_reader.py) import it.

    truth = write_challenge_tree(ptbxl_dir, tmp / "challenge")            # training/cpsc_2018, chapman_shaoxing
    truth = write_ecg_arrhythmia_tree(ptbxl_dir, tmp / "ecg-arrhythmia")  # WFDBRecords/01/01x + ConditionNames CSV

Each record is a PTB-XL 500 Hz record's ADC values (gain 1000/mV, the challenge's gain too) written as a MATLAB
v4 `.mat` (20-byte header + "val\\0", then int16 column-major, i.e. interleaved by sample) with a `.hea` naming it
as format 16+24. Labels are assigned by fixed cycles over the record number (no random generator), so counts are
exact and stable: every CPSC class has 4 or more positives; the CSN-like codes range from 3 to 14 positives.
The truth table returned says what each header holds (record_id, path, source, dx, age, sex, n_samples, fs,
origin = the PTB-XL record the samples came from). Building both trees takes well under a second.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pandas as pd

from esi.data.leads import STANDARD_LEADS
from esi.data.reader import read_digital

FS = 500
GAIN = 1000  # ADC units per mV, in PTB-XL and in the challenge files
CHALLENGE_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

# CPSC2018's 9 classes as SNOMED codes (NSR, AF, I-AVB, LBBB, RBBB, PAC, PVC, STD, STE).
CPSC_CODES = ("426783006", "164889003", "270492004", "164909002", "59118001", "284470004", "164884008",
              "429622005", "164931005")
UNKNOWN_CODE = "999999999"

# Records with something special, by name.
LOWER_CASE_RECORD = "A0005"  # lead names i, ii, ..., avr, v1, ...
SHORT_RECORD = "A0007"  # 6 s
LONG_RECORD = "A0008"  # 60 s: the 10 s PTB-XL signal tiled 6 times
UNKNOWN_CODE_RECORD = "A0011"  # a known CPSC code and 999999999
NO_AGE_RECORD = "A0003"  # "#Age: NaN"
NO_SEX_RECORD = "A0004"  # "#Sex: Unknown"
NO_DX_RECORD = "JS00030"  # chapman_shaoxing record whose header has no #Dx line
CSN_UNKNOWN_CODE_RECORD = "JS00017"  # ecg-arrhythmia record with a code the acronym table lacks

N_CPSC, N_CHAPMAN, N_CSN = 40, 30, 40

# The CSN-like code set: SNOMED code -> (acronym, full name) as ecg-arrhythmia's ConditionNames_SNOMED-CT.csv
# lists them; it includes the acronyms that substring matching confuses (AF/AFIB, ST/STTC/STE/STDD, 1AVB/2AVB).
CSN_CODES = {
    "426177001": ("SB", "Sinus Bradycardia"),
    "426783006": ("SR", "Sinus Rhythm"),
    "164889003": ("AFIB", "Atrial Fibrillation"),
    "427084000": ("ST", "Sinus Tachycardia"),
    "164890007": ("AF", "Atrial Flutter"),
    "164934002": ("TWC", "T wave Change"),
    "59118001": ("RBBB", "right bundle branch block"),
    "713427006": ("CRBBB", "complete right bundle branch block"),
    "164909002": ("LBBB", "left bundle branch block"),
    "733534002": ("CLBBB", "complete left bundle branch block"),
    "284470004": ("APB", "atrial premature beats"),
    "63593006": ("SVPB", "supraventricular premature beat"),
    "427172004": ("PVC", "premature ventricular contraction"),
    "17338001": ("VPB", "ventricular premature beat"),
    "428750005": ("STTC", "ST-T Change"),
    "270492004": ("1AVB", "1 degree atrioventricular block"),
    "195042002": ("2AVB", "2 degree atrioventricular block"),
    "429622005": ("STDD", "ST drop down"),
    "164931005": ("STE", "ST extension"),
    "39732003": ("ALS", "Axis left shift"),
}
# Rhythm of record k (k = 0, 1, ...): SB and SR get 10+ positives in 30 records, AFIB and ST 5.
_CSN_RHYTHMS = ("426177001", "426783006", "164889003", "427084000", "426783006", "426177001")
# Extra codes of record k by k % 10, including the pairs the challenge scores as equivalent.
_CSN_EXTRAS_A = (("164934002",), ("59118001",), (), ("713427006", "164934002"), ("284470004",), ("164909002",),
                 ("63593006", "164934002"), ("427172004",), ("733534002",), ("17338001", "164890007"))
# More, by k % 8, for the ecg-arrhythmia tree only (the acronyms that substring matching confuses).
_CSN_EXTRAS_B = (("428750005",), ("270492004",), (), ("195042002",), ("429622005",), (), ("164931005",),
                 ("39732003",))


def mat_v4_bytes(val: np.ndarray) -> bytes:
    """The bytes of a MATLAB v4 file holding one int16 matrix named `val`, as the challenge ships it.

    Layout: 5 little-endian int32 (type 30 = little-endian int16 numeric, rows, columns, imaginary 0, name
    length 4), the name "val\\0" (24 bytes so far: the `+24` of the header's format field), then the matrix in
    column-major order, which for leads x samples is interleaved by sample: WFDB format 16.

    Args:
        val: int16 (n_leads, n_samples).
    """
    val = np.asarray(val)
    if val.dtype != np.int16 or val.ndim != 2:
        raise ValueError(f"val must be a 2-D int16 array, got {val.dtype} {val.shape}")
    header = struct.pack("<5i", 30, val.shape[0], val.shape[1], 0, 4) + b"val\x00"
    return header + np.ascontiguousarray(val.T).astype("<i2").tobytes()


def _checksum(lead: np.ndarray) -> int:
    """WFDB's checksum of one signal: the sum of its samples as a signed 16-bit number."""
    total = int(lead.sum(dtype=np.int64)) & 0xFFFF
    return total - 0x10000 if total >= 0x8000 else total


def header_text(name: str, val: np.ndarray, comments: dict[str, str], leads=CHALLENGE_LEADS, fs: int = FS) -> str:
    """The `.hea` text of a challenge record.

    Args:
        name: the record name (A0001); the signal file is `<name>.mat`.
        val: int16 (n_leads, n_samples) ADC values at GAIN units per mV.
        comments: key -> value of the comment lines, written "#Key: value" in order.
        leads: the lead names written on the signal lines.
        fs: sampling rate (Hz).
    """
    lines = [f"{name} {val.shape[0]} {fs} {val.shape[1]} 05-Feb-2020 11:39:16"]
    for lead_name, lead in zip(leads, val):
        first = int(lead[0]) if lead.size else 0
        lines.append(f"{name}.mat 16+24 {GAIN}/mV 16 0 {first} {_checksum(lead)} 0 {lead_name}")
    lines += [f"#{key}: {value}" for key, value in comments.items()]
    return "\n".join(lines) + "\n"


def write_challenge_record(folder: Path, name: str, val: np.ndarray, comments: dict[str, str],
                           leads=CHALLENGE_LEADS) -> Path:
    """Write `<folder>/<name>.hea` and `.mat`; returns the record path without extension."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.mat").write_bytes(mat_v4_bytes(val))
    (folder / f"{name}.hea").write_text(header_text(name, val, comments, leads))
    return folder / name


def ptbxl_digital(ptbxl_dir: Path, ecg_id: int) -> np.ndarray:
    """The int16 ADC values (12, 5000) of a PTB-XL 500 Hz record, standard lead order, at 1000 units per mV."""
    path = ptbxl_record(ptbxl_dir, ecg_id)
    digital = read_digital(path, leads=STANDARD_LEADS)
    if digital is None or digital.gain != GAIN:
        raise ValueError(f"{path}: expected a plain format-16 record at {GAIN}/mV")
    return digital.digital


def ptbxl_record(ptbxl_dir: Path, ecg_id: int) -> str:
    """The path (without extension) of PTB-XL record `ecg_id` at 500 Hz."""
    return str(Path(ptbxl_dir) / "records500" / f"{(ecg_id // 1000) * 1000:05d}" / f"{ecg_id:05d}_hr")


def _demographics(ptbxl_dir: Path) -> pd.DataFrame:
    """PTB-XL's age and sex by ecg_id (sex 0 = male, 1 = female)."""
    database = pd.read_csv(Path(ptbxl_dir) / "ptbxl_database.csv", usecols=["ecg_id", "age", "sex"])
    return database.set_index("ecg_id")


def _age_text(age: float) -> str:
    return "NaN" if not math.isfinite(age) else str(int(age))


def cpsc_dx(k: int) -> list[str]:
    """The #Dx codes of the k-th (0-based) cpsc_2018 fixture record."""
    codes = [CPSC_CODES[k % 9]]
    if k % 4 == 1:  # every 4th record multi-label
        codes.append(CPSC_CODES[(k + 4) % 9])
    if f"A{k + 1:04d}" == UNKNOWN_CODE_RECORD:
        codes.append(UNKNOWN_CODE)
    return codes


def csn_dx(k: int, more: bool) -> list[str]:
    """The #Dx codes of the k-th (0-based) CSN-like fixture record; `more` adds the second cycle of codes."""
    codes = [_CSN_RHYTHMS[k % len(_CSN_RHYTHMS)], *_CSN_EXTRAS_A[k % len(_CSN_EXTRAS_A)]]
    if more:
        codes += _CSN_EXTRAS_B[(k + 3) % len(_CSN_EXTRAS_B)]
    return list(dict.fromkeys(codes))  # no code twice


def _truth_row(path: Path, source: str, dx: list[str], age: float, sex: str, val: np.ndarray,
               origin: str) -> dict:
    return {"record_id": path.name, "path": str(path.resolve()), "source": source, "dx": ";".join(dx),
            "age": age, "sex": sex, "n_samples": int(val.shape[1]), "fs": float(FS), "origin": origin}


def _cpsc_signal(val: np.ndarray, name: str) -> np.ndarray:
    """CPSC records are 6-60 s: the short and the long fixture record are cut from / tiled out of 10 s."""
    if name == SHORT_RECORD:
        return np.ascontiguousarray(val[:, :6 * FS])
    if name == LONG_RECORD:
        return np.ascontiguousarray(np.tile(val, (1, 6)))
    return val


def write_challenge_tree(ptbxl_dir: str | Path, out_dir: str | Path, n_cpsc: int = N_CPSC,
                         n_chapman: int = N_CHAPMAN) -> pd.DataFrame:
    """A challenge-2021 training tree: `training/cpsc_2018/g1|g2/A0001..A0040`, `training/chapman_shaoxing/
    g1|g2/JS00001..JS00030`, from PTB-XL records 1-70 at 500 Hz.

    Args:
        ptbxl_dir: the PTB-XL folder (records500/, ptbxl_database.csv).
        out_dir: where to write (created); the tree's root, holding `training/`.
        n_cpsc, n_chapman: records of each source (PTB-XL records 1..n_cpsc, then the next n_chapman); the
            defaults are what the counts in the data tests assume, larger trees serve end-to-end protocol runs.

    Returns:
        The truth table: record_id, path (absolute, no extension), source, dx (";"-joined as written),
        age (float, NaN where written NaN), sex ("M", "F", ""), n_samples, fs, origin (PTB-XL record path),
        sorted by record_id.
    """
    ptbxl_dir, training = Path(ptbxl_dir), Path(out_dir) / "training"
    people = _demographics(ptbxl_dir)
    rows = []
    for k in range(n_cpsc):
        ecg_id, name = k + 1, f"A{k + 1:04d}"
        val = _cpsc_signal(ptbxl_digital(ptbxl_dir, ecg_id), name)
        age = math.nan if name == NO_AGE_RECORD else float(people.age[ecg_id])
        sex = "" if name == NO_SEX_RECORD else ("F" if people.sex[ecg_id] == 1 else "M")
        dx = cpsc_dx(k)
        comments = {"Age": _age_text(age), "Sex": {"M": "Male", "F": "Female", "": "Unknown"}[sex],
                    "Dx": ",".join(dx), "Rx": "Unknown", "Hx": "Unknown", "Sx": "Unknown"}
        leads = [lead.lower() for lead in CHALLENGE_LEADS] if name == LOWER_CASE_RECORD else CHALLENGE_LEADS
        folder = training / "cpsc_2018" / ("g1" if k < n_cpsc // 2 else "g2")
        path = write_challenge_record(folder, name, val, comments, leads)
        rows.append(_truth_row(path, "cpsc_2018", dx, age, sex, val, ptbxl_record(ptbxl_dir, ecg_id)))
    for k in range(n_chapman):
        ecg_id, name = n_cpsc + k + 1, f"JS{k + 1:05d}"
        val = ptbxl_digital(ptbxl_dir, ecg_id)
        age = float(people.age[ecg_id])
        sex = "F" if people.sex[ecg_id] == 1 else "M"
        dx = [] if name == NO_DX_RECORD else csn_dx(k, more=False)
        # Chapman writes "Male"/"Female"; a few written "M"/"F" with odd spacing check the parser's tolerance.
        comments = {"Age": _age_text(age)}
        if k % 7 == 3:
            comments[" sex "] = sex  # written "# sex : M"
        else:
            comments["Sex"] = {"M": "Male", "F": "Female"}[sex]
        if dx:
            comments["Dx"] = ",".join(dx)
        comments.update({"Rx": "Unknown", "Hx": "Unknown", "Sx": "Unknown"})
        folder = training / "chapman_shaoxing" / ("g1" if k < n_chapman // 2 else "g2")
        path = write_challenge_record(folder, name, val, comments)
        rows.append(_truth_row(path, "chapman_shaoxing", dx, age, sex, val, ptbxl_record(ptbxl_dir, ecg_id)))
    return pd.DataFrame(rows).sort_values("record_id").reset_index(drop=True)


def write_ecg_arrhythmia_tree(ptbxl_dir: str | Path, out_dir: str | Path, n: int = N_CSN,
                              first_ecg_id: int = N_CPSC + N_CHAPMAN + 1) -> pd.DataFrame:
    """An ecg-arrhythmia 1.0.0 tree: `WFDBRecords/01/010/JS00001..JS00020`, `WFDBRecords/01/011/JS00021..
    JS00040` from PTB-XL records 71-110 at 500 Hz, and `ConditionNames_SNOMED-CT.csv` for the codes used
    (all but UNKNOWN_CODE, which CSN_UNKNOWN_CODE_RECORD carries).

    Args:
        ptbxl_dir: the PTB-XL folder (records500/, ptbxl_database.csv).
        out_dir: where to write (created).
        n: records (the default is what the data tests' counts assume).
        first_ecg_id: the PTB-XL record the first one is made from (then the next ones, up to record 500).

    Returns:
        The truth table, as `write_challenge_tree` describes it, with source "ecg_arrhythmia".
    """
    ptbxl_dir, out_dir = Path(ptbxl_dir), Path(out_dir)
    people = _demographics(ptbxl_dir)
    rows, used = [], set()
    for k in range(n):
        ecg_id, name = first_ecg_id + k, f"JS{k + 1:05d}"
        val = ptbxl_digital(ptbxl_dir, ecg_id)
        age, sex = float(people.age[ecg_id]), "F" if people.sex[ecg_id] == 1 else "M"
        dx = csn_dx(k, more=True)
        used.update(dx)
        if name == CSN_UNKNOWN_CODE_RECORD:
            dx.append(UNKNOWN_CODE)
        comments = {"Age": _age_text(age), "Sex": {"M": "Male", "F": "Female"}[sex], "Dx": ",".join(dx),
                    "Rx": "Unknown", "Hx": "Unknown", "Sx": "Unknown"}
        folder = out_dir / "WFDBRecords" / "01" / ("010" if k < n // 2 else "011")
        path = write_challenge_record(folder, name, val, comments)
        rows.append(_truth_row(path, "ecg_arrhythmia", dx, age, sex, val, ptbxl_record(ptbxl_dir, ecg_id)))
    names = pd.DataFrame([(CSN_CODES[c][0], CSN_CODES[c][1], c) for c in CSN_CODES if c in used],
                         columns=["Acronym Name", "Full Name", "Snomed_CT"])
    names.to_csv(out_dir / "ConditionNames_SNOMED-CT.csv", index=False)
    return pd.DataFrame(rows).sort_values("record_id").reset_index(drop=True)
