"""
TokenLoader: batches from a split of a Dataset (nanogpt/tokenfiles.py, the reader that checks what it opens), for
train.py and bench.py, drawn from a numbered stream whose position it saves.
SyntheticLoader: random tokens, for bench.py without prepared data.
"""

import numpy as np
import torch

from nanogpt.tokenfiles import Dataset


class TokenLoader:
    """Random (B, T) windows of a split, like nanoGPT's get_batch, drawn from a numbered stream of batches: batch g
    depends on (seed, g) alone. Rank r of world_size reads batches r, r + world_size, ..., so the ranks read
    different data, and together they read what one process with world_size times the accumulation reads.
    state_dict() is the position in the stream: a resumed run continues with the very batches it would have drawn."""

    def __init__(self, data: Dataset, split: str, batch_size: int, block_size: int, vocab_size: int | None = None,
                 device='cpu', seed: int = 1337, rank: int = 0, world_size: int = 1):
        self.batch_size, self.block_size = batch_size, block_size
        self.device = torch.device(device)
        self.data, self.split = data, split
        self.paths, self.lengths = data.split(split)
        # a window of block_size + 1 tokens (inputs and shifted targets) must fit in a file
        self.windows = np.array([max(n - block_size, 0) for n in self.lengths], dtype=np.int64)
        if self.windows.sum() == 0:
            more = 'prepare it again with a larger --shard_size' if len(self.lengths) > 1 else 'prepare more data'
            raise SystemExit(f"error: {split} data in {data.dir} has {max(self.lengths)} tokens in its largest file, "
                             f"too few for one block of {block_size} + 1 (a block never spans two files): lower "
                             f"block_size or {more}")
        self.offsets = np.concatenate([[0], np.cumsum(self.windows)])
        self.vocab_size = vocab_size
        if vocab_size is not None:
            data.check_ids(split, vocab_size)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.next = 0  # the stream's next batch number, the same on every rank

    def next_batch(self):
        B, T = self.batch_size, self.block_size
        g = self.next + self.rank
        self.next += self.world_size
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + g) % (1 << 63))
        starts = torch.randint(int(self.offsets[-1]), (B,), generator=generator).numpy()
        files = np.searchsorted(self.offsets, starts, side='right') - 1
        # fresh memmaps per batch: a long-lived one grows the resident memory, see
        # https://stackoverflow.com/questions/45132940/numpy-memmap-memory-usage-want-to-iterate-once/61472122#61472122
        maps = {f: self.data.tokens(self.split, f) for f in set(files.tolist())}
        rows = [maps[f][s - self.offsets[f]:s - self.offsets[f] + T + 1].astype(np.int64) for f, s in zip(files, starts)]
        del maps
        if any(len(row) != T + 1 for row in rows):  # the file is shorter than when the run opened it
            raise SystemExit(f"error: {self.paths[files[0]]}... was cut short or written over in place while this run "
                             f"read it (the run keeps files replaced whole, not ones changed in place): prepare the "
                             f"dataset again into a new folder and resume from the last checkpoint")
        batch = np.stack(rows)
        if self.vocab_size is not None and batch.max() >= self.vocab_size:  # the check at start samples the files
            raise SystemExit(f"error: a batch of {self.paths[0]}... holds token id {batch.max()}, outside the model's "
                             f"vocabulary of {self.vocab_size}: the data was prepared with another tokenizer")
        batch = torch.from_numpy(batch)
        x, y = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()
        if self.device.type == 'cuda':
            # pin arrays x,y, which allows us to move them to GPU asynchronously (non_blocking=True)
            return (x.pin_memory().to(self.device, non_blocking=True),
                    y.pin_memory().to(self.device, non_blocking=True))
        return x.to(self.device), y.to(self.device)

    def reset(self):
        """Back to the first batch of the stream: evaluation reads the same batches every time."""
        self.next = 0

    def state_dict(self) -> dict:
        return {'next': self.next, 'seed': self.seed}

    def load_state_dict(self, state: dict):
        self.next, self.seed = state['next'], state['seed']


class SyntheticLoader:
    """Random tokens, the same (B, T) batch every step: times the model alone (bench.py)."""

    def __init__(self, batch_size: int, block_size: int, vocab_size: int, device):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(vocab_size, (batch_size, block_size), generator=g).to(device)
        self.y = torch.randint(vocab_size, (batch_size, block_size), generator=g).to(device)

    def next_batch(self):
        return self.x, self.y
