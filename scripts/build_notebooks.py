"""Write notebooks/*.ipynb (outputs stripped) from the cells below and params/demo.yaml.

    .venv/bin/python scripts/build_notebooks.py          # rewrite the four notebooks
    .venv/bin/python scripts/build_notebooks.py --check  # exit 1 if a committed notebook differs

Edit the notebooks here, not in Jupyter: the parameters cell of each notebook is generated from params/demo.yaml
(values and comments) and the stage dataclasses (types), so the notebooks' defaults are the embedded default.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import types
import typing
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from esi.notebook import CORPUS_FIELDS, known_parameters, stage_classes  # noqa: E402

DEMO = ROOT / "params" / "demo.yaml"
KEY_LINE = re.compile(r"^(?P<key>[a-z][a-z0-9_]*):\s*(?P<value>.*?)\s+#\s*(?P<help>.*)$")

# Which params keys each notebook declares (every demo.yaml key of these, in demo.yaml's order).
DECLARED = {
    "01_cardio_query_assistant": lambda key: key.split("_")[0] in ("run", "demo", "cqa")
    or key in ("data_statements", "data_reference_dict", "data_queries"),
    "02_data_exploration": lambda key: key.split("_")[0] in ("run", "demo")
    or (key.startswith("data_") and key not in ("data_statements", "data_reference_dict", "data_queries"))
    or key in {f"train_{f}" for f in CORPUS_FIELDS + ("text_encoder", "max_text_length")}
    or key == "evaluate_ptbxl_root",
    "03_pretrain": lambda key: key.split("_")[0] in ("run", "demo", "train"),
    "04_ptbxl_evaluation": lambda key: key.split("_")[0] in ("run", "demo", "evaluate"),
}


def demo_entries() -> list[tuple[str, object, str]]:
    """(key, value, help) for every key of params/demo.yaml, in file order."""
    values = yaml.safe_load(DEMO.read_text())
    entries = []
    for line in DEMO.read_text().splitlines():
        match = KEY_LINE.match(line)
        if match:
            entries.append((match["key"], values[match["key"]], match["help"].strip()))
    missing = set(values) - {key for key, _, _ in entries}
    if missing:
        raise SystemExit(f"{DEMO}: key(s) without a same-line comment: {', '.join(sorted(missing))}")
    return entries


def annotation(key: str) -> str:
    """The parameter's type as papermill shows it: str, int, float, bool, list, dict, or "Optional[...]"."""
    section, name = known_parameters()[key]
    hint = typing.get_type_hints(stage_classes()[section])[name]
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        hint = next(a for a in args if a is not type(None))
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        base = type(typing.get_args(hint)[0]).__name__
    elif origin in (list, tuple) or hint in (list, tuple):
        base = "list"
    elif origin is dict or hint is dict:
        base = "dict"
    elif dataclasses.is_dataclass(hint):
        base = "dict"
    else:
        base = getattr(hint, "__name__", "str")
    # A string annotation: papermill reads it, and Python does not evaluate it (Optional is not imported).
    return f'"Optional[{base}]"' if optional else base


def literal(value) -> str:
    """A Python literal for a YAML value, strings double-quoted."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def parameters_cell(notebook: str) -> str:
    keep = [(k, v, h) for k, v, h in demo_entries() if DECLARED[notebook](k)]
    lines = [f"{k}: {annotation(k)} = {literal(v)}" for k, v, _ in keep]
    width = max(len(line) for line in lines) + 2
    body = "\n".join(f"{line:<{width}}# {h}" for line, (_, _, h) in zip(lines, keep))
    return ("# Parameters: the embedded default (params/demo.yaml). papermill -f/-p injects new values after this\n"
            "# cell; params/README.md documents every key.\n" + body)


VALIDATE = """from esi.notebook import load_params

params = load_params(globals())   # unknown or mistyped parameters stop here, naming the key"""

CORPUS = """from esi.notebook import ensure_demo_corpus

demo = ensure_demo_corpus(params)   # with demo_corpus_dir set: generated once, then reused
print(f"demo corpus: {demo.root}" if demo else "no demo corpus (demo_corpus_dir is empty): real data")"""

RUN_COMMAND = ("papermill notebooks/{name}.ipynb out.ipynb -f params/demo.yaml -p key value   # or: make demo\n")


def header(name: str, title: str, text: str) -> str:
    return (f"# {title}\n\n{text}\n\nRun it from the repository root, as part of the whole chain or alone:\n\n"
            f"```\n{RUN_COMMAND.format(name=name)}```\n\n"
            "The first code cell holds the parameters (tagged `parameters`); the next one validates them. Paths "
            "are relative to the repository root whatever the working directory; figures are saved under "
            "`<run_dir>/figures/` and shown here.")


NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}

NOTEBOOKS["01_cardio_query_assistant"] = [
    ("md", header("01_cardio_query_assistant", "01 · Cardio Query Assistant",
                  "The Cardio Query Assistant (CQA, `esi.rag`) turns every machine ECG statement (\"Sinus rhythm "
                  "with 1st degree A-V block\") into a description of the waveform a reader would see, grounded in a "
                  "cardiology knowledge base (`esi/rag/knowledge/`: findings with numeric criteria, leads and "
                  "look-alikes).\n\n"
                  "* **Retrieval**: local MiniLM embeddings (llama-index) plus exact name and alias matches.\n"
                  "* **Generation**: the `extractive` backend quotes the retrieved criteria (offline, no LLM); "
                  "`cqa_backend: openai` or `hf` lets a language model write the description from the same "
                  "passages.\n"
                  "* **Output**: `<run_dir>/cqa/waveform_dict.json` (statement -> description) with "
                  "`provenance.jsonl`; pretraining (03) composes these descriptions into its texts.")),
    ("parameters", ""),
    ("code", VALIDATE),
    ("code", CORPUS),
    ("md", "## The knowledge index\n\nBuilt once per content (knowledge base, user documents, embedding model, "
           "chunking) and kept under `cqa_index_dir`; unchanged sources are loaded instead of re-embedded."),
    ("code", "from esi.rag.index import build_index\n\n"
             "index = build_index(params.cqa)\n"
             "print(f\"{len(index.entries)} knowledge entries, {index.n_nodes} indexed nodes, \"\n"
             "      f\"{'built now' if index.rebuilt else 'loaded'} from {index.directory}\")"),
    ("md", "## The statement vocabulary\n\nEvery distinct statement of `data_statements` with the number of "
           "records it occurs in. Spellings that differ only in case, punctuation or hedges share one normal "
           "form, and one description serves them all."),
    ("code", "import pandas as pd\n\n"
             "from esi.notebook import statements_path\n"
             "from esi.rag.vocabulary import load_vocabulary\n\n"
             "vocabulary = load_vocabulary(statements_path(params))\n"
             "print(f\"{len(vocabulary)} distinct statements, {len(vocabulary.groups())} normal forms, \"\n"
             "      f\"from {vocabulary.source}\")\n"
             "pd.DataFrame([(s.text, s.count) for s in vocabulary], columns=[\"statement\", \"records\"]).head(15)"),
    ("md", "## Retrieval examples\n\nThe knowledge entries retrieved for the queries in `data_queries`. A score "
           "of 1.0 is an exact name or alias match (\"LBBB\"); lower scores are embedding similarity. A statement "
           "is described only from entries scoring at least `cqa_min_score`."),
    ("code", "from esi.rag.index import query\n\n"
             "rows = [(q, rank, hit.entry_id, round(hit.score, 3), hit.match)\n"
             "        for q in params.data.queries\n"
             "        for rank, hit in enumerate(query(index, q, k=params.cqa.top_k), 1) if hit.entry_id]\n"
             "pd.DataFrame(rows, columns=[\"query\", \"rank\", \"knowledge entry\", \"score\", \"match\"])"),
    ("md", "## Generate the descriptions\n\nEach answer is cached (`cqa_cache_path`), so an unchanged rerun makes "
           "no backend call and a killed run resumes. Notes that describe no waveform (\"Unconfirmed report\", "
           "\"Age and gender not entered\", comparisons with an earlier ECG) get no description on purpose; the "
           "rule that decided it is in `provenance.jsonl`."),
    ("code", "from esi.notebook import dictionary_handoff\n"
             "from esi.rag.generation import generate\n\n"
             "result = generate(vocabulary, params.cqa, params.run_dir / \"cqa\", index=index)\n"
             "print(result.counts(), f\"{result.n_generated} generated, {result.n_cached} from the cache\")\n"
             "print(dictionary_handoff(params, result.dict_path))"),
    ("code", "described = [r for r in result.records if r[\"status\"] == \"described\"][:5]\n"
             "with pd.option_context(\"display.max_colwidth\", 500):\n"
             "    display(pd.DataFrame([(r[\"statement\"], \", \".join(r[\"findings\"]), "
             "result.descriptions[r[\"statement\"]])\n"
             "                          for r in described], columns=[\"statement\", \"findings\", \"description\"]))"),
    ("md", "## Coverage and retrieval quality\n\n*Coverage*: the share of statements that get a description or are "
           "justified non-diagnostic notes. *hit@k*: on the labelled retrieval set bundled with the package "
           "(`esi/rag/eval/retrieval_set.csv`: real MIMIC-IV-ECG and PTB-XL statements with the entry a "
           "cardiologist would pick), the share whose expected entry is among the first k retrieved."),
    ("code", "from esi.notebook import show\n"
             "from esi.plots import plot_cqa_coverage\n"
             "from esi.rag import quality\n\n"
             "coverage = quality.coverage(index, vocabulary, params.cqa.min_score, k=params.cqa.top_k)\n"
             "hits = quality.hit_rate(index, quality.load_retrieval_set(), ks=(1, 3))\n"
             "print(coverage)\n"
             "print(hits)\n"
             "show(plot_cqa_coverage(result, hits), \"01_cqa_coverage\", params)"),
    ("code", "print(\"uncovered statements:\", coverage.uncovered[:20] or \"none\")"),
    ("md", "## Agreement with a reference dictionary\n\nWith `data_reference_dict` set (for example the dictionary "
           "released with the ESI paper), the cosine similarity between our description and the reference's "
           "for every statement both describe (MiniLM embeddings)."),
    ("code", "import json\n\n"
             "from esi.notebook import show\n"
             "from esi.paths import resolve\n"
             "from esi.plots import plot_agreement\n\n"
             "if params.data.reference_dict:\n"
             "    reference = json.loads(resolve(params.data.reference_dict).read_text())\n"
             "    cosines = quality.agreement(result.descriptions, reference, index.embed_model)\n"
             "    print(f\"{len(cosines)} statements described in both dictionaries\")\n"
             "    if cosines:\n"
             "        show(plot_agreement(list(cosines.values())), \"01_cqa_agreement\", params)\n"
             "else:\n"
             "    print(\"data_reference_dict is empty: no comparison\")"),
]

NOTEBOOKS["02_data_exploration"] = [
    ("md", header("02_data_exploration", "02 · Data exploration",
                  "What pretraining will see: the ECG-text corpus (`train_corpus`, `train_data_root`) converted into "
                  "the ECG store that 03 reads, its statements and text lengths, sampling rates, lead availability "
                  "and quality flags, a few ECGs on standard ECG paper, and the average beat of every class of the "
                  "PTB-XL evaluation set.")),
    ("parameters", ""),
    ("code", VALIDATE),
    ("code", CORPUS),
    ("md", "## The pretraining corpus\n\nConverted once into the store at `train_store_dir` (int16 memory-mapped "
           "shards plus an index table; resumable) and paired with its texts: demographics, machine statements "
           "and the descriptions 01 wrote. Exactly what 03 reads."),
    ("code", "import pandas as pd\n\n"
             "from esi.data.corpus import build_corpus\n"
             "from esi.notebook import corpus_arguments, dataset_table\n\n"
             "corpus = build_corpus(**corpus_arguments(params.train))\n"
             "store = corpus.store\n"
             "dataset_table(corpus)"),
    ("code", "print(corpus.texts[int(corpus.rows[\"train\"][0])])   # one composed text"),
    ("md", "## Statement frequencies"),
    ("code", "from esi.notebook import show, statement_frequencies\n"
             "from esi.plots import plot_statement_frequencies\n\n"
             "counts = statement_frequencies(params.train)\n"
             "show(plot_statement_frequencies(counts, top=20), \"02_statement_frequencies\", params)"),
    ("md", "## Text lengths in tokens\n\nCounted with the text encoder's own tokenizer (`train_text_encoder`); "
           "pretraining cuts every text at `train_max_text_length` tokens."),
    ("code", "from esi.notebook import token_lengths\n"
             "from esi.plots import plot_token_lengths\n\n"
             "lengths = token_lengths(corpus.texts, params.train.text_encoder, params.data.text_sample, "
             "params.data.seed)\n"
             "show(plot_token_lengths(lengths, params.train.max_text_length, params.train.text_encoder),\n"
             "     \"02_text_lengths\", params)"),
    ("md", "## Sampling rates, leads and quality flags\n\nFrom the store's index: the rate of every source "
           "record, which leads its file held, and the quality flags set at conversion (flat or saturated "
           "leads, repaired samples, resampling, short records)."),
    ("code", "from esi.plots import plot_store_overview\n\n"
             "show(plot_store_overview(store.index, store.masks, store.leads, store.fs),\n"
             "     \"02_leads_quality\", params)"),
    ("md", "## ECGs on standard ECG paper\n\n25 mm/s and 10 mm/mV on a 1 mm / 5 mm grid, a 1 mV calibration "
           "pulse on every row, the 3 x 4 layout (2.5 s per column) and a lead II rhythm strip; drawn from the "
           "source files at their own rate."),
    ("code", "from esi.data.reader import read_ecg\n"
             "from esi.notebook import example_rows\n"
             "from esi.plots import plot_ecg_with_text\n\n"
             "for row in example_rows(corpus, params.data.examples, params.data.seed):\n"
             "    record = store.index.iloc[row]\n"
             "    ecg = read_ecg(record[\"path\"])   # the source file, at its own rate\n"
             "    show(plot_ecg_with_text(ecg.signal, ecg.fs, ecg.leads, record[\"record_id\"], corpus.texts[row]),\n"
             "         f\"02_ecg_{record['record_id']}\", params)"),
    ("md", "## Average beat per class\n\nOn the PTB-XL evaluation set (`evaluate_ptbxl_root`) with the classes of "
           "`data_beat_task`: the QRS complexes of each record are found on all leads at once (`esi.beats`), the "
           "beats are aligned on them and their median taken; the line is the median over up to "
           "`data_beat_records` records of the class and the band the 25-75 % range between records."),
    ("code", "from esi.notebook import class_beats\n"
             "from esi.plots import plot_average_beats\n\n"
             "beats = class_beats(params.evaluate.ptbxl_root, params.data.beat_task, params.data.beat_records,\n"
             "                    params.data.seed)\n"
             "show(plot_average_beats(beats, params.data.beat_leads), \"02_average_beats\", params)\n"
             "pd.DataFrame([(b.name, b.n_records, round(b.rate_bpm)) for b in beats],\n"
             "             columns=[\"class\", \"records\", \"median heart rate (bpm)\"])"),
]

NOTEBOOKS["03_pretrain"] = [
    ("md", header("03_pretrain", "03 · Pretraining",
                  "`esi.train`: a CoCa-style model pairs a 1D ConvNeXt V2 ECG encoder with a pretrained text "
                  "encoder; a contrastive loss (global negatives) aligns ECGs with their texts and a caption "
                  "decoder learns to write the text from the ECG.\n\n"
                  "* One process (`run_nproc_per_node: 1`): training runs inside this notebook; the curves are drawn "
                  "when it ends.\n"
                  "* More (one per GPU): torchrun runs as a subprocess (`esi.train.launch`) and the curves are redrawn "
                  "live from `metrics.csv` every `run_refresh_s` seconds.\n\n"
                  "Training resumes from the newest checkpoint (`train_resume: auto`), so running this notebook again "
                  "continues (or, when finished, only redraws). The same run from a shell: "
                  "`python -m esi.train --config params/demo.yaml`.")),
    ("parameters", ""),
    ("code", VALIDATE),
    ("code", CORPUS),
    ("code", "from esi.notebook import check_pretraining_inputs, config_table\n\n"
             "check_pretraining_inputs(params)   # the dictionary from 01 and the corpus exist\n"
             "config_table(params.train, \"train\")"),
    ("md", "## Train"),
    ("code", "from esi.notebook import train_with_live_curves\n"
             "from esi.train import train\n\n"
             "if params.run.nproc_per_node == 1:\n"
             "    result = train(params.train)\n"
             "    print(f\"{result.steps} optimizer steps; model saved to {result.model_dir}\")\n"
             "else:\n"
             "    train_with_live_curves(params)"),
    ("md", "## Curves\n\nLosses per optimizer step (train) and per epoch (validation); ECG -> text retrieval "
           "recall@k on the validation pairs, with the chance level k / pool dotted."),
    ("code", "from esi.notebook import show, validation_table\n"
             "from esi.paths import resolve\n"
             "from esi.plots import plot_training_curves\n\n"
             "metrics = resolve(params.train.out_dir) / \"metrics.csv\"\n"
             "show(plot_training_curves(metrics), \"03_training_curves\", params)\n"
             "validation_table(metrics)"),
    ("md", "## Caption samples\n\nValidation ECGs with the caption the model writes for them (greedy decoding) "
           "and the text they were paired with. A small demo model learns the frequent phrases first."),
    ("code", "from esi.notebook import caption_samples\n\n"
             "for name, fig in caption_samples(params):\n"
             "    show(fig, name, params)"),
]

NOTEBOOKS["04_ptbxl_evaluation"] = [
    ("md", header("04_ptbxl_evaluation", "04 · PTB-XL evaluation",
                  "`esi.evaluate` runs the protocols in `evaluate_protocols` on the PTB-XL folder "
                  "`evaluate_ptbxl_root` (folds 1-8 train, 9 validation, 10 test), for every encoder in "
                  "`evaluate_encoders` and its randomly initialised twin (the baseline):\n\n"
                  "* **linear_probe**: frozen features, a linear head on a fraction of the training labels;\n"
                  "* **benchmark**: the PTB-XL benchmark recipe, supervised from scratch and fine-tuned;\n"
                  "* **zero_shot**: class names and their CQA descriptions as text prompts;\n"
                  "* **identification**: find a patient's other ECG by embedding similarity.\n\n"
                  "Results: `<evaluate_out_dir>/results.csv` (tidy), `per_class.csv` and `figures/`. On the demo's "
                  "small test fold the intervals are wide: a smoke test of the pipeline, not literature numbers.")),
    ("parameters", ""),
    ("code", VALIDATE),
    ("code", CORPUS),
    ("md", "## Run the protocols\n\nStores and frozen features are cached under `<evaluate_out_dir>/evaluate/`, "
           "so a rerun skips what is done."),
    ("code", "from esi.evaluate import evaluate\n\n"
             "result = evaluate(params.evaluate, params.run.name)"),
    ("md", "## Results\n\nMacro AUROC and AUPRC (identification: top-k accuracy) with a bootstrap interval over the "
           "test records (90 % by default: the PTB-XL benchmark's 5th-95th percentiles) and, for each pretrained "
           "encoder, the p-value of a paired bootstrap test against its random-init twin on the same records. "
           "`recipe` says which training recipe produced a row (`benchmark`: the published one)."),
    ("code", "from esi.evaluate import results_pivot\n"
             "from esi.notebook import show\n"
             "from esi.plots import plot_results_summary\n\n"
             "show(plot_results_summary(result.table), \"04_results_summary\", params)\n"
             "results_pivot(result.table)"),
    ("md", "## Figures of the evaluation\n\nPer-class AUROC, ROC curves, AUROC against the label fraction, a t-SNE "
           "map of the embeddings and the identification CMC curve (those the protocols run allow)."),
    ("code", "from esi.notebook import show_image\n\n"
             "for path in result.figures:\n"
             "    print(path.name)\n"
             "    show_image(path)"),
]


def build(name: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    for i, (kind, source) in enumerate(NOTEBOOKS[name]):
        if kind == "md":
            cell = nbformat.v4.new_markdown_cell(source)
        elif kind == "parameters":
            cell = nbformat.v4.new_code_cell(parameters_cell(name), metadata={"tags": ["parameters"]})
        else:
            cell = nbformat.v4.new_code_cell(source)
        cell["id"] = f"{name[:2]}-{i:02d}"    # stable ids: regenerating gives the same file
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a notebook differs")
    args = parser.parse_args(argv)
    stale = []
    for name in NOTEBOOKS:
        path = ROOT / "notebooks" / f"{name}.ipynb"
        text = nbformat.writes(build(name)) + "\n"
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"out of date (run scripts/build_notebooks.py): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
