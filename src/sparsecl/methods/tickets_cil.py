"""`tickets_cil`: Lifelong Tickets' dense class-incremental learner, no pruning (upstream main_CIL.py).

Per task t: a `retrieve` stage (t >= 1) picks the unlabeled images around the exemplars with the
previous task's model and stores their frozen views and teacher logits; the `train` stage trains
task t from the previous task's model by lottery teaching (see methods/tickets.py). It is the dense
reference of the paper, and the dense chain of `tickets_bu` is exactly this method.
"""

from __future__ import annotations

from .base import register_method
from .tickets import TicketsMethod


@register_method("tickets_cil")
class TicketsCIL(TicketsMethod):
    stages = ("retrieve", "train")
