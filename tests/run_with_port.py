"""Run a pika program unchanged against a broker on another port.

``python tests/run_with_port.py PORT script.py [args...]``: pika's default port is
set to PORT, then the script runs as ``__main__``, so the tutorial's
``ConnectionParameters(host="localhost")`` reaches the test broker.
"""

import runpy
import sys

import pika.connection

pika.connection.Parameters.DEFAULT_PORT = int(sys.argv[1])
script = sys.argv[2]
sys.argv = [script, *sys.argv[3:]]
runpy.run_path(script, run_name="__main__")
