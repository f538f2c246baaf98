"""Byte units, defined once.

Reports give decimal GB (1e9, as storage vendors and bandwidth figures do) and binary GiB
(2**30, as memory and the reference workflow's "training data size" do); keeping both in
one module stops the two from being mixed up in different places.
"""

from __future__ import annotations

GB = 1e9
"""Decimal gigabyte: bandwidth figures (GB/s) and the homework table's data size column."""

GIB = 2**30
"""Binary gibibyte: memory sizes and the dataset size the reference reports."""

MIB = 2**20
"""Binary mebibyte: chunk and message sizes."""
