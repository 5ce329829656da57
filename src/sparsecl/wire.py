"""The stage server's wire format, shared by the job that asks (`launcher`) and the server that runs it.

A request is a length (HEADER) and that many bytes of JSON, sent with the job's standard streams
as file descriptors; each answer is one STATUS record. Standard library only: the job's client
imports it before anything else.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct("!I")  # length of the JSON request
STATUS = struct.Struct("!ii")  # (kind, value): kind 0 = child pid, 1 = exit status
