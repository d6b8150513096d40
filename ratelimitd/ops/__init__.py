"""Running the daemon in production: lifecycle, metrics, HTTP health, persistence, systemd."""
