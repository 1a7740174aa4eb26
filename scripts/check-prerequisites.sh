#!/bin/sh
# Fails with a clear message when this machine lacks something pinpipe cannot install itself.
set -u
PYTHON="${PYTHON:-python3}"
fail() { echo "pinpipe setup: $1" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || fail "no '$PYTHON' found. Install Python 3.11+ (Debian: apt-get install python3 python3-venv) or run 'make PYTHON=/path/to/python3.11'."
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || fail "Python 3.11 or newer is needed, '$PYTHON' is $("$PYTHON" -V 2>&1). Run 'make PYTHON=/path/to/python3.11'."
"$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 \
  || fail "the Python venv module is missing (Debian: apt-get install python3-venv)."
# Spark (batch and speed layers) needs a Java runtime, 17 or newer.
command -v java >/dev/null 2>&1 \
  || fail "no Java runtime found; Spark needs Java 17+ (Debian: apt-get install openjdk-17-jre-headless)."
exit 0
