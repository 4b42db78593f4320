# GPT-2 (124M) on FineWeb-Edu sample-10BT, build-nanogpt's recipe: python data/fineweb_edu/prepare.py first
# $ torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_fineweb_edu.py
# one epoch of ~10B tokens: 19,073 steps of 524,288 tokens (2**19)

out_dir = 'out-fineweb-edu'
dataset = 'fineweb_edu'
wandb_log = False
wandb_project = 'fineweb-edu'
wandb_run_name = 'gpt2-124M'

# 16 batch size * 1024 block size * 4 gradaccum * 8 GPUs = 524,288
batch_size = 16
block_size = 1024
gradient_accumulation_steps = 4 * 8

max_iters = 19073
lr_decay_iters = 19073
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 715
weight_decay = 0.1
bias = True  # as GPT-2, so the checkpoint exports to a Hugging Face GPT-2 as is

eval_interval = 250
eval_iters = 20
log_interval = 10
hellaswag_interval = 250
