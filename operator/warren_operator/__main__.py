"""``python -m warren_operator`` (the ``warren-operator`` command): the operator's process.

Reads ``OperatorSettings``, serves the Prometheus metrics (``telemetry``) unless the port is 0,
and runs kopf with ``handlers`` (standalone, as ``handlers.configure`` sets) over every namespace,
or over ``WARREN_OPERATOR_NAMESPACE`` alone, with its liveness endpoint on the health port. kopf
stops on SIGTERM or SIGINT. Exit status: 0 stopped; 1 a port could not be opened; 2 bad settings.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import kopf

from warren.config import load
from warren.errors import ConfigError
from warren_operator import handlers, telemetry
from warren_operator.config import OperatorSettings

EXIT_PORT = 1
EXIT_CONFIG = 2


def main() -> None:
    try:
        settings = load(OperatorSettings)
    except ConfigError as e:
        print(f"warren-operator: {e}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    kopf.configure(debug=settings.log_level == "DEBUG", log_prefix=True)
    logging.getLogger().setLevel(settings.log_level)
    if settings.metrics_port:
        try:
            telemetry.serve(settings.metrics_port)
        except OSError as e:
            print(f"warren-operator: cannot serve metrics on port {settings.metrics_port}: {e.strerror}",
                  file=sys.stderr)
            sys.exit(EXIT_PORT)
    logging.getLogger(__name__).info(
        "watching WorkerAutoscalers (%s/%s) in %s", handlers.GROUP, handlers.VERSION,
        f"namespace {settings.namespace}" if settings.namespace else "every namespace")
    asyncio.run(kopf.operator(
        clusterwide=not settings.namespace, namespaces=[settings.namespace] if settings.namespace else (),
        standalone=True, liveness_endpoint=settings.liveness_endpoint))


if __name__ == "__main__":
    main()
