"""CPU and memory requests and limits for every task, so a cluster schedules and bounds each one.

Light tasks (ingest, gates, sign, promote, serve, halt) load pandas, great-expectations or the OPA engine in
one process; training also holds torch, the adversarial-robustness attacks and (optionally) DP-SGD state, so
it is sized apart. Limits bound what a compromised or runaway step can take from its node.
"""

from __future__ import annotations

from dataclasses import dataclass

from kfp.dsl import PipelineTask

from components._platform import harden as _harden


@dataclass(frozen=True)
class Size:
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str


LIGHT = Size(cpu_request="250m", cpu_limit="1", memory_request="512M", memory_limit="2G")
TRAIN = Size(cpu_request="2", cpu_limit="4", memory_request="4G", memory_limit="8G")


def sized(task: PipelineTask, size: Size = LIGHT) -> PipelineTask:
    return (task.set_cpu_request(size.cpu_request).set_cpu_limit(size.cpu_limit)
            .set_memory_request(size.memory_request).set_memory_limit(size.memory_limit))


def harden(task: PipelineTask, **kwargs: bool) -> PipelineTask:
    """components._platform.harden, plus the light tasks' resources (train is re-sized with TRAIN)."""
    return sized(_harden(task, **kwargs))
