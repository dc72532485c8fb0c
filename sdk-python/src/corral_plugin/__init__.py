"""Corral plugins in Python.

A plugin is one module: a :class:`Plugin` with its metadata and form, a task
function, optional step handlers and a page for visualizations. See the SDK's
README for a walk-through and ``corral_plugin.qhana`` for porting QHAna plugins.
"""

from . import fields
from ._data import Data
from ._data import read as read_data
from ._proto import PROTOCOL_VERSION
from .context import Context, OutputWriter, StepRequest
from .errors import Cancelled, TaskError
from .forms import InvalidInputs
from .plugin import DataInput, DataOutput, Plugin, PluginDependency

__all__ = [
    "PROTOCOL_VERSION",
    "Cancelled",
    "Context",
    "Data",
    "DataInput",
    "DataOutput",
    "InvalidInputs",
    "OutputWriter",
    "Plugin",
    "PluginDependency",
    "StepRequest",
    "TaskError",
    "fields",
    "read_data",
]
