#!/bin/sh
# Container entrypoint.
#   no arguments:   serve $EMBED_CONFIG (default /etc/embed/embed.toml). `appliance serve` compiles it
#                   into $EMBED_RUNTIME_DIR first -- a bad config exits 2 with the compiler's message,
#                   before anything starts -- and then execs supervisord, which stays PID 1 and stops
#                   tritonserver and the gateway cleanly on SIGTERM (podman stop).
#   any arguments:  run them as an appliance subcommand, e.g. `verify /models/...` or `compile ...`.
set -eu

# Run with --user <another uid> (e.g. to download into a folder you own), the image's home is not
# writable: give caches (huggingface_hub, ONNX Runtime) a writable one.
[ -w "${HOME:-/nonexistent}" ] || export HOME=/tmp

if [ "$#" -gt 0 ]; then
    exec appliance "$@"
fi

config=${EMBED_CONFIG:-/etc/embed/embed.toml}
if [ ! -f "$config" ]; then
    echo "appliance: error: no config at $config" >&2
    echo "  fix: mount your embed.toml: -v ./embed.toml:$config:ro" >&2
    exit 2
fi
if ! mkdir -p "$EMBED_RUNTIME_DIR" 2>/dev/null || [ ! -w "$EMBED_RUNTIME_DIR" ]; then
    echo "appliance: error: runtime dir $EMBED_RUNTIME_DIR is not writable by uid $(id -u)" >&2
    echo "  fix: do not mount it read-only (it holds the compiled Triton repository, never the weights)" >&2
    exit 2
fi
exec appliance serve --config "$config" --runtime-dir "$EMBED_RUNTIME_DIR"
