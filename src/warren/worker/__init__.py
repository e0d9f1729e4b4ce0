"""Worker pools: typed tasks, the ack/retry/dead-letter decision, and the consume loop."""

from warren.worker.pool import Pool, Task, TaskContext, load_pool

__all__ = ["Pool", "Task", "TaskContext", "load_pool"]
