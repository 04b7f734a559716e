"""ECG data layer: read WFDB records, convert them into a memory-mapped store, pair them with texts, load them.

Import each name from the module that defines it; this package exports nothing, so `import esi.data` stays
light (only `datasets` imports torch):

    leads        STANDARD_LEADS, MIMIC_LEADS, canonical_lead, lead_indices
    ecg          ECG (one record in memory), ECGFormatError
    reader       read_ecg, read_digital (WFDB files -> ECG)
    quality      quality_flags: missing, flat or saturated leads, repaired, resampled, short
    sources      record lists of PTB-XL, MIMIC-IV-ECG, the PhysioNet Challenge layouts or a folder, as one table
    challenge    CinC 2020/2021 and ecg-arrhythmia (CPSC2018, CSN) record tables with their #Dx codes, age, sex
    store        ECGStore (the memory-mapped store) and its on-disk format
    convert      convert (WFDB records -> ECGStore; resumable; python -m esi.data.convert)
    transforms   normalize, fit_scaler, Scaler, crop offsets, window starts, Augment
    datasets     ECGDataset (a torch Dataset over a store: crops, windows, normalisation, augmentation), collate
    ptbxl        PTB-XL database, SCP statements, folds and the benchmark's tasks
    mimic        load_pairs: MIMIC-IV-ECG records, machine statements and demographics as ECG-text pairs
    statements   normalize_statement, StatementDict, load_waveform_dict (statement -> waveform description)
    text         the texts ECGs are paired with (demographics + statements + descriptions)
    tokens       tokenise a corpus once and cache the token ids
    corpus       build_corpus: a store's ECGs paired with their texts, split into train and validation
    demo_corpus  generate_demo: the offline demo corpus (python -m esi.data.demo_corpus)

    from esi.data.reader import read_ecg
    ecg = read_ecg("/data/ptb-xl/records500/00000/00001_hr")     # ECG: signal (12, n) in mV, fs, leads, mask
"""
