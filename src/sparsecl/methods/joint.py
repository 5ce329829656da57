"""`joint`: the upper bound. After task t the network has been trained on the training images
of every task 0..t, with the loss over all classes seen so far.

It continues from task t-1's weights (cumulative training) rather than restarting, so stage t
costs (t+1) tasks' worth of data per epoch, and its class-IL accuracy bounds what a method
without stored data can reach under the same budget of epochs per stage. In a data-incremental
scenario, step t trains on the chunks 0..t.
"""

from __future__ import annotations

from .base import Method, TaskContext, TaskResult, register_method
from .finetune import train_dense


@register_method("joint")
class Joint(Method):
    def train_task(self, ctx: TaskContext) -> TaskResult:
        seen = ctx.scenario.tasks[ctx.task][-1] + 1
        return train_dense(ctx, tasks=list(range(ctx.task + 1)), logits=(0, seen))
