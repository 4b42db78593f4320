# evaluate the base gpt2-large (774M params) on OpenWebText val: python train.py config/eval_gpt2_large.py
# (nanoGPT's figures for train/val loss: gpt2 3.11/3.12, medium 2.85/2.84, large 2.66/2.67, xl 2.56/2.54)
batch_size = 8
eval_iters = 500  # use more iterations to get good estimate
eval_only = True
wandb_log = False
init_from = 'gpt2-large'
