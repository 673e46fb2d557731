"""The appliance's own exit status (supervisord.conf's `exitcodes` for tritonserver must match it: a test checks)."""

from __future__ import annotations

# EX_CONFIG (sysexits.h): the models cannot load. The tritonserver launcher exits with it so that
# supervisord does not restart it in a loop, and `appliance serve` exits with it so that systemd,
# Kubernetes and `podman run` see a failure, not a clean stop.
MODELS_FAILED = 78
