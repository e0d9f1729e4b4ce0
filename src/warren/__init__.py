"""Warren: reliable RabbitMQ worker roles for Kubernetes.

The public surface::

    from warren import Pool, TaskContext, Producer, load_settings

    pool = Pool("payments")

    @pool.task(max_attempts=3)
    def charge(payload: Charge, ctx: TaskContext) -> None: ...

    with Producer(load_settings()) as producer:
        producer.send(charge, Charge(order_id="o-1", cents=500))

``warren.testing`` runs a task through the real delivery handling without a broker.
"""

from warren.config import Settings, load_settings
from warren.errors import ConfigError, PermanentError, RetryableError, WarrenError
from warren.producer import Producer
from warren.worker.pool import Pool, Task, TaskContext

__version__ = "0.2.0"

__all__ = [
    "ConfigError",
    "PermanentError",
    "Pool",
    "Producer",
    "RetryableError",
    "Settings",
    "Task",
    "TaskContext",
    "WarrenError",
    "__version__",
    "load_settings",
]
