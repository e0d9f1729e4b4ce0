"""Worker pools: typed task handlers, the ack/retry/dead-letter decision, and the consume loop."""

from warren.worker.pool import Pool, TaskContext, load_pool

__all__ = ["Pool", "TaskContext", "load_pool"]
