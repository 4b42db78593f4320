"""
The machinery beneath nanoGPT's scripts (train.py, sample.py, bench.py, ...), one concern per module, imported by
its full name so that an import says where the code lives (`from nanogpt.checkpoint import Checkpointer`):

    runtime     device, DDP process group, dtype, autocast and seeds; rank-0 printing; the stop/NaN guard; peak FLOPS
    parallel    placing, sharding (FSDP2) and wrapping (DDP) the model; gradient sync and norm; gathering its state
    fit         fitting a run to the machine: a micro-batch that does not fit in memory, accumulated smaller ones
    checkpoint  what out_dir/ckpt.pt holds: saving it, loading a model from it, restoring the training state
    weights     weight files from outside read safely (no pickled code), the Hugging Face GPT-2 format both ways
    tokenizer   GPT-2's BPE, a character vocabulary, and the check that a model's ids mean the dataset's
    tokenfiles  the token-file contract: the writer, meta.json, and Dataset, the reader that checks what it opens
    loader      the batches train.py and bench.py read, resumable
    prepare     what the data/<name>/prepare.py scripts share
    rundir      the run folder (out_dir): one run at a time holds it; what an earlier run left is never destroyed
    runlog      out_dir/log.jsonl (and wandb): the record kinds plot.py reads
    errors      the one-line error hook every script installs
    files       writing a file atomically, and downloading one

tokenfiles, prepare, errors and files import no torch: the prepare scripts need numpy only. Nothing here is
imported by model.py at import time.
"""
