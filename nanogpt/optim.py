"""
Two optimizers used as one. With optimizer='muon', torch.optim.Muon (momentum orthogonalised by Newton-Schulz)
trains the 2-D weight matrices inside the Blocks and AdamW trains the rest: the token and position embeddings (wte
is also lm_head), LayerNorm weights and biases. Optimizers puts them behind one optimizer's interface
(param_groups, state, step, zero_grad), so that train_step, the float16 GradScaler (one unscale_ and one step: an
overflow skips both), clipping and fit_step treat them as they treat AdamW alone; a checkpoint saves each part under
its own key (AdamW's under nanoGPT's 'optimizer', Muon's under 'muon').

A param group's 'lr_scale' is its learning rate over learning_rate: the schedule (warmup, cosine decay) drives both,
Muon's peaking at muon_learning_rate.
"""

import torch

OPTIMIZERS = ('adamw', 'muon')  # the values of the optimizer key


class Optimizers:
    """Optimizers over disjoint parameters, stepped as one; parts maps each one's checkpoint key to it."""

    def __init__(self, parts: dict):
        self.parts = parts

    @property
    def param_groups(self) -> list[dict]:
        return [group for part in self.parts.values() for group in part.param_groups]

    @property
    def state(self) -> dict:
        return {p: s for part in self.parts.values() for p, s in part.state.items()}

    def step(self):
        for part in self.parts.values():
            part.step()

    def zero_grad(self, set_to_none: bool = True):
        for part in self.parts.values():
            part.zero_grad(set_to_none=set_to_none)


def with_muon(adamw, matrices: list, weight_decay: float, learning_rate: float, muon_learning_rate: float,
              muon_momentum: float) -> Optimizers:
    """AdamW and torch.optim.Muon over the given matrices, as one. Muon's learning rate follows learning_rate's
    schedule, peaking at muon_learning_rate."""
    scale = muon_learning_rate / learning_rate if learning_rate else 0.0
    muon = torch.optim.Muon([{'params': matrices, 'lr_scale': scale}], lr=muon_learning_rate,
                            weight_decay=weight_decay, momentum=muon_momentum)
    return Optimizers({'optimizer': adamw, 'muon': muon})


def parts(optimizer) -> dict:
    """{checkpoint key: optimizer} of an Optimizers, or of one optimizer alone (AdamW, under 'optimizer')."""
    return optimizer.parts if isinstance(optimizer, Optimizers) else {'optimizer': optimizer}
