"""Serving permits: configuration, the service's ops, the socket server and the wait queues."""
