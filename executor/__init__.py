"""dagrelay: run DAG flows of typed tools in-process or across Dramatiq workers.

Everything users need is importable from here; `__all__` is the public API.
"""

from executor.client import FlowExecutor
from executor.errors import DagrelayError, FlowValidationError, RunNotFoundError
from executor.handle import RunHandle
from executor.model.authoring import flow, index, item
from executor.model.flow import Flow, load_flow
from executor.model.retry import RetryPolicy
from executor.model.spec import Step
from executor.model.tools import Tool, ToolRegistry, default_registry, load_tools, tool
from executor.result import ExecutionResult, FlowFailedError
from executor.run.context import StepContext, current_step
from executor.run.events import RunEvent
from executor.run.records import Attempt, StepError, StepRecord
from executor.version import __version__ as __version__

__all__ = [
    "Attempt",
    "DagrelayError",
    "ExecutionResult",
    "Flow",
    "FlowExecutor",
    "FlowFailedError",
    "FlowValidationError",
    "RetryPolicy",
    "RunEvent",
    "RunHandle",
    "RunNotFoundError",
    "Step",
    "StepContext",
    "StepError",
    "StepRecord",
    "Tool",
    "ToolRegistry",
    "current_step",
    "default_registry",
    "flow",
    "index",
    "item",
    "load_flow",
    "load_tools",
    "tool",
]
