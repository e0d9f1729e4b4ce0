"""Warren's reference workload: an e-commerce pipeline (orders, inventory, payments, shipping,
notifications, analytics, audit) with its HTTP API and demo, built on the public ``warren`` API."""
