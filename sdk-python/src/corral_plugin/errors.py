"""How a task ends other than by returning."""


class TaskError(Exception):
    """Ends the task ``FAILURE`` with this message as its reason."""


class Cancelled(Exception):
    """The task's call was cancelled (its client went away, or the plugin stops).
    Raised by the context's methods once that happened; let it propagate."""
