"""The generic recurrent loop: Keras ``backend.rnn`` semantics for any step function.

For each time step ``t`` (inputs already reversed for ``go_backwards``)::

    out_t, new = step(x_t, states)
    if mask is None or mask[:, t]:  states = new;  output_t = out_t
    else:                           states kept;   output_t = prev_output      (zeros if zero_output_for_mask)

``prev_output`` starts as zeros (or ``initial_output``), so steps masked before a row's first real
step output zeros even with a non-zero initial state. The last output is ``output_{T-1}`` after these rules.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Step = Callable[[torch.Tensor, list[torch.Tensor]], tuple[torch.Tensor, list[torch.Tensor]]]


def run_loop(step: Step, inputs: torch.Tensor, states: list[torch.Tensor], mask: torch.Tensor | None,
             *, zero_output_for_mask: bool = False, return_sequences: bool = True,
             initial_output: torch.Tensor | None = None,
             ) -> tuple[torch.Tensor | None, torch.Tensor, list[torch.Tensor]]:
    """Run ``step`` over ``inputs`` [batch, time, ...] from ``states``.

    ``initial_output`` replaces the zeros that masked steps repeat before a row's first real step (a
    stream runtime passes each stream's last output from its previous chunk).
    Returns ``(outputs [batch, time, out] or None, last_output [batch, out], final_states)``.
    """
    outputs: list[torch.Tensor] = []
    output = initial_output
    for t in range(inputs.shape[1]):
        out_t, new_states = step(inputs[:, t], states)
        if mask is None:
            output, states = out_t, new_states
        else:
            keep = mask[:, t, None]
            if output is None:
                output = torch.zeros_like(out_t)
            fallback = torch.zeros_like(out_t) if zero_output_for_mask else output
            output = torch.where(keep, out_t, fallback)
            states = [torch.where(keep, new, old) for new, old in zip(new_states, states)]
        if return_sequences:
            outputs.append(output)
    if output is None:
        raise ValueError("the recurrent loop needs at least one time step")
    stacked = torch.stack(outputs, dim=1) if return_sequences else None
    return stacked, output, states
