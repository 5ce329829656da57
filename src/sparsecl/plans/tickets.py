"""Lifelong Tickets' plans (tickets_cil, tickets_td, tickets_bu) and their arguments.

Every task t >= 1 starts with `retrieve`: the unlabeled images around the exemplars, their views
and the teacher logits of task t-1's dense `train` model; every later stage of the task that
trains distils on them. tickets_cil trains densely (`train`); tickets_td prunes a fixed number of
rounds after each task and retrains the last ticket at the end (`final`); tickets_bu prunes task
0 by IMP rounds and lets each later task regrow its ticket, and since accuracy decides how many
rounds run, those stages are deciding stages.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..config import RunConfig
from ..errors import ConfigError
from .base import STANDING, TRAINED, Decide, MethodArgs, Plan, Ref, Stage, register_plan

UNLABELED_SOURCES = ("pool", "held_out_classes")
REWINDS = ("zero", "best", "rand", "none")
RETRIEVE_KEYS = ("unlabeled_source", "unlabeled_per_exemplar")
LOTTERY_KEYS = (*RETRIEVE_KEYS, "kd_temperature")
PRUNE_KEYS = (*LOTTERY_KEYS, "prune_fraction", "retrain_epochs", "retrain_lr")
ROUND_KEYS = (*PRUNE_KEYS, "deacc", "base_sparsity", "max_rounds")  # a bottom-up round's stopping rule
BIG = 16000  # MB a cluster job asks for: distillation holds the unlabeled images and their teacher logits


@dataclass(frozen=True)
class LotteryArgs(MethodArgs):
    """`method_args` shared by the three tickets methods."""

    unlabeled_source: str = "pool"
    unlabeled_per_exemplar: int = 50
    kd_temperature: float = 2.0

    def check(self, run: RunConfig) -> None:
        if self.unlabeled_source not in UNLABELED_SOURCES:
            raise ConfigError(
                f"method_args.unlabeled_source: expected one of {UNLABELED_SOURCES}, got {self.unlabeled_source!r}"
            )
        if run.scenario.kind != "class":
            raise ConfigError(
                f"scenario.kind: the tickets methods are class-incremental (class), got {run.scenario.kind!r}"
            )


@dataclass(frozen=True)
class PruneArgs(LotteryArgs):
    """Shared by the pruning methods: the prune step and the retraining between prunes."""

    prune_fraction: float = 0.2
    retrain_epochs: int = 30
    retrain_lr: float = 1e-4

    def check(self, run: RunConfig) -> None:
        super().check(run)
        if not 0 < self.prune_fraction < 1:
            raise ConfigError(f"method_args.prune_fraction: expected in (0, 1), got {self.prune_fraction}")


@dataclass(frozen=True)
class TDArgs(PruneArgs):
    prune_schedule: tuple[int, ...] = (1, 1, 2, 3, 5)
    rewind: str = "zero"

    def check(self, run: RunConfig) -> None:
        super().check(run)
        # Only the prune rounds read the schedule: the other stages' configs do not carry it.
        scheduled = "prune_schedule" in run.method_args
        if scheduled and (len(self.prune_schedule) != run.scenario.num_tasks or min(self.prune_schedule) < 1):
            raise ConfigError(
                f"method_args.prune_schedule: expected {run.scenario.num_tasks} prune counts >= 1 (one per task),"
                f" got {list(self.prune_schedule)}"
            )
        if self.rewind not in REWINDS:
            raise ConfigError(f"method_args.rewind: expected one of {REWINDS}, got {self.rewind!r}")


@dataclass(frozen=True)
class BUArgs(PruneArgs):
    deacc: float = 2.0
    accept_decay: float = 1.0
    max_rounds: int = 26
    base_sparsity: float = 90.0

    def check(self, run: RunConfig) -> None:
        super().check(run)
        if self.max_rounds < 1:
            raise ConfigError(f"method_args.max_rounds: expected >= 1, got {self.max_rounds}")
        if run.protocol == "standard" and not run.scenario.validation_fraction:
            raise ConfigError(
                "scenario.validation_fraction: tickets_bu's stopping rules read a validation split under the"
                " standard protocol; expected a fraction > 0"
            )


def prev(task: int, stage: str, model: str = "model.pt") -> dict[str, Ref]:
    """A stage's starting point (--prev-model/--prev-masks): the files of `stage` of `task`."""
    return {"prev_model": Ref(task, stage, model), "prev_masks": Ref(task, stage, "masks.pt")}


class Tickets(Plan):
    """The stages the three share: `retrieve` and the dense lottery-teaching `train`."""

    args = LotteryArgs
    stage_keys = {"retrieve": RETRIEVE_KEYS, "train": LOTTERY_KEYS}

    def unlabeled(self, run: RunConfig, task: int) -> tuple[dict[str, Ref], tuple[str, ...]]:
        """What a training stage of task t >= 1 distils on: task t's retrieval (and the pool)."""
        if task == 0:
            return {}, ()
        return {"unlabeled": Ref(task, "retrieve", "unlabeled.pt")}, self.pool(run)

    def pool(self, run: RunConfig) -> tuple[str, ...]:
        source = run.method_args.get("unlabeled_source", LotteryArgs.unlabeled_source)
        return ("unlabeled_pool",) if source == "pool" else ()

    def retrieve(self, run: RunConfig, task: int) -> Iterator[Stage]:
        if task:
            yield Stage(
                "retrieve",
                prev(task - 1, "train"),
                (*TRAINED, "unlabeled.pt"),
                keys=self.stage_keys["retrieve"],
                needs=self.pool(run),
                mem_mb=BIG,
                runtime=60,
            )

    def dense(self, run: RunConfig, task: int) -> Stage:
        """Lottery teaching of task t from task t-1's dense model."""
        reads, needs = self.unlabeled(run, task)
        start = prev(task - 1, "train") if task else {}
        return Stage("train", start | reads, keys=self.stage_keys["train"], needs=needs, mem_mb=BIG, runtime=480)

    def stages(self, run: RunConfig, task: int, decide: Decide) -> Iterator[Stage]:
        yield from self.retrieve(run, task)
        yield self.dense(run, task)


@register_plan("tickets_cil")
class TicketsCIL(Tickets):
    """Dense class-incremental learning by lottery teaching."""


@register_plan("tickets_td")
class TicketsTD(Tickets):
    """Top-down: `prune_schedule[t]` prune rounds after task t; the last round is task t's ticket.

    `faithful` continues from `train`'s last epoch (last.pt) and, for t >= 1, its first prune
    ranks the best-validation weights (`ranked`); `standard` prunes its best-validation model.
    """

    args = TDArgs
    stage_keys = {
        "retrieve": RETRIEVE_KEYS,
        "train": (*LOTTERY_KEYS, "rewind"),
        "prune": (*PRUNE_KEYS, "prune_schedule"),
        "final": (*LOTTERY_KEYS, "rewind", "prune_schedule"),
    }

    def stages(self, run: RunConfig, task: int, decide: Decide) -> Iterator[Stage]:
        args = TDArgs.of(run)
        faithful = run.protocol == "faithful"
        unlabeled, needs = self.unlabeled(run, task)
        yield from self.retrieve(run, task)
        writes = (*TRAINED, "last.pt", *(() if task else ("init.pt",)))
        # The ticket task t-1 ended with is the stage that stands for it (its last prune round), so
        # the training stage does not read the schedule, and a new schedule leaves task 0's alone.
        start = prev(task - 1, STANDING) | self.rewind(args, task - 1) if task else {}
        keys = self.stage_keys["train"]
        yield Stage("train", start | unlabeled, writes, keys=keys, needs=needs, mem_mb=BIG, runtime=480)
        rounds = args.prune_schedule[task]
        for r in range(1, rounds + 1):
            if r == 1:
                reads = prev(task, "train", "last.pt" if faithful else "model.pt")
                if faithful and task:
                    reads["ranked"] = Ref(task, "train")
            else:
                reads = prev(task, f"prune{r - 1}")
            retrained = r < rounds
            yield Stage(
                "prune",
                reads | (unlabeled if retrained else {}),
                keys=self.stage_keys["prune"],
                needs=needs if retrained else (),
                round=r,
                mem_mb=BIG,
                runtime=240,
            )
        if task == run.scenario.num_tasks - 1:
            reads = self.ticket(args, task) | self.rewind(args, task) | unlabeled
            yield Stage("final", reads, keys=self.stage_keys["final"], needs=needs, mem_mb=BIG, runtime=480)

    def ticket(self, args: TDArgs, task: int) -> dict[str, Ref]:
        """The ticket task `task` ends with: its last prune round."""
        return prev(task, f"prune{args.prune_schedule[task]}")

    def rewind(self, args: TDArgs, task: int) -> dict[str, Ref]:
        """The weights the ticket's conv layers rewind to before the task after `task`."""
        if args.rewind == "zero":
            return {"rewind": Ref(0, "train", "init.pt")}
        if args.rewind == "best":
            return {"rewind": Ref(task, "train")}
        return {}


@register_plan("tickets_bu")
class TicketsBU(Tickets):
    """Bottom-up: IMP rounds on task 0; from task 1 on, the ticket so far trained on the task
    (`ticket`) and, when it falls behind the dense reference, regrowth rounds. Each round's
    decision.json says whether another follows and which round the loop keeps: the kept stage is
    the task's ticket, evaluated, and the next task's ticket starts from its mask.
    """

    args = BUArgs
    stage_keys = {
        "retrieve": RETRIEVE_KEYS,
        "train": LOTTERY_KEYS,
        "imp": ROUND_KEYS,
        "ticket": (*LOTTERY_KEYS, "accept_decay"),
        "regrow": ROUND_KEYS,
    }
    explore = {"regrow": True, "stop": True, "kept": 1}  # a ticket that regrows, loops of one round
    reach = {"regrow": True, "stop": False}

    def stages(self, run: RunConfig, task: int, decide: Decide) -> Iterator[Stage]:
        yield from self.retrieve(run, task)
        yield self.dense(run, task)
        unlabeled, needs = self.unlabeled(run, task)
        test = ("test_split",) if run.protocol == "faithful" else ()
        writes = (*TRAINED, "decision.json")
        deciding = {"writes": writes, "deciding": True, "needs": needs + test, "mem_mb": BIG}
        if task == 0:
            kind, start = "imp", prev(0, "train")
        else:
            kind, start = "regrow", {"prev_model": Ref(task, "train"), "prev_masks": Ref(task, "ticket", "masks.pt")}
            ticket = {"prev_model": Ref(task - 1, "train"), "prev_masks": Ref(task - 1, STANDING, "masks.pt")}
            ticket["dense"] = Ref(task, "train")
            decider = Stage("ticket", ticket | unlabeled, keys=self.stage_keys["ticket"], runtime=480, **deciding)
            yield decider
            if not decide(task, decider)["regrow"]:
                return
        for r in range(1, BUArgs.of(run).max_rounds + 1):  # the stopping rule ends at max_rounds
            reads = start if r == 1 else prev(task, f"{kind}{r - 1}")
            loop = Stage(kind, reads | unlabeled, keys=self.stage_keys[kind], round=r, runtime=240, **deciding)
            yield loop
            if decide(task, loop)["stop"]:
                return

    def standing(self, run: RunConfig, task: int, decide: Decide) -> str:
        """The round the loop keeps (`train` or `ticket` when it keeps none)."""
        last = list(self.stages(run, task, decide))[-1]
        if last.kind == "ticket":
            return last.name
        kept = decide(task, last)["kept"]
        kind, before = ("imp", "train") if task == 0 else ("regrow", "ticket")
        return f"{kind}{kept}" if kept else before
