"""The exported program on the host: checked as a zip of JSON and raw tensors (never
unpickled, no torch), then counted. One public entry for the stages:

- ``check_program(archive, clean, expect)``: the allow-list, the graph, the payloads
  (``check``, ``graph``, ``ops``, ``records``); raises ``CheckError`` naming the rule;
- ``count_program(program, literals, allowance)``: the learned values the program can
  read (``count``).

The phase-B interpreter that runs a checked program is ``harness/runner/interpreter.py``.
"""

from .check import check_program
from .count import ExportCount, count_program
from .records import CheckError, Expect

__all__ = ["CheckError", "ExportCount", "Expect", "check_program", "count_program"]
