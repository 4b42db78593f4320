"""
The machinery beneath nanoGPT's scripts (train.py, sample.py, bench.py, ...), one concern per module, imported by
its full name so that an import says where the code lives (`from nanogpt.checkpoint import Checkpointer`):

    runtime     device, DDP process group, dtype, autocast and seeds; rank-0 printing; the stop/NaN guard; peak FLOPS
    parallel    placing, sharding (FSDP2) and wrapping (DDP) the model; gradient sync and norm; gathering its state
    optim       optimizer='muon': torch.optim.Muon and AdamW behind one optimizer's interface
    fit         fitting a run to the machine: a micro-batch that does not fit in memory, accumulated smaller ones
    checkpoint  what out_dir/ckpt.pt holds: saving it, loading a model from it, restoring the training state
    weights     weight files from outside read safely (no pickled code), the Hugging Face GPT-2 format both ways
    tokenizer   GPT-2's BPE, a character vocabulary, and the check that a model's ids mean the dataset's
    tokenfiles  the token-file contract: a dataset prepared as a unit, meta.json, and Dataset, the checked reader
    loader      the batches train.py and bench.py read, resumable
    prepare     what the data/<name>/prepare.py scripts share
    rundir      the run folder (out_dir): one run at a time holds it; what an earlier run left is never destroyed
    runlog      out_dir/log.jsonl (and wandb): the record kinds plot.py reads
    sweep       bench.py's sweeps: settings, result lines, the table, the results file
    ranges      the values each config key may take, checked by the configurator
    fields      the fields of every kind of file read, checked by its reader
    errors      the one-line error hook every script installs, and the options its hints may name
    files       the one writer of every file: atomic, never through a link; and downloading one

tokenfiles, prepare, tokenizer, ranges, fields, errors and files import no torch: the prepare scripts run without it
(numpy, tiktoken; datasets for the hub corpora). Nothing here is imported by model.py at import time.
"""
