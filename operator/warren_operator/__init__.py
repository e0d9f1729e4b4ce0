"""Warren's operator: scales worker Deployments from RabbitMQ queue depth.

The directory is ``operator/`` but the package is ``warren_operator``: a package named
``operator`` would shadow the standard library's module of that name.
"""
