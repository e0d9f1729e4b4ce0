"""Benchmarks for Warren against a private RabbitMQ node.

``python -m bench.throughput`` measures end-to-end worker throughput and batch publishing
against raw pika and Celery; it prints a table and writes ``bench/results/throughput.json``.
``python -m bench.latency`` measures end-to-end latency percentiles at a fixed publish rate
against the same two and writes ``bench/results/latency.json``.
"""
