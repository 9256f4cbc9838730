"""The /proc parsing of `refinery bench serve-memory` (no Ray)."""

from __future__ import annotations

from bench.serve_memory import mapping_rss_mb, rollup_kb

SMAPS = """\
55d0c0000000-55d0c0021000 r--p 00000000 fd:01 131  /usr/bin/python3.11
Size:                132 kB
Rss:                 128 kB
Pss:                  64 kB
7f0000000000-7f0040000000 r--p 00000000 fd:01 4242                       /data/index v1/index.bin
Size:            1048576 kB
Rss:             1048000 kB
Pss:              524000 kB
7f0040000000-7f0040100000 rw-p 00000000 00:00 0
Size:               1024 kB
Rss:                1024 kB
7f0050000000-7f0050001000 r--p 40000000 fd:01 4242                       /data/index v1/index.bin
Rss:                   4 kB
VmFlags: rd mr mw me
7f0060000000-7f0060001000 r--p 00000000 fd:01 4243                   /data/index v1/index.bin.old
Rss:                   4 kB
"""

ROLLUP = """\
55d0c0000000-7ffd5e7f2000 ---p 00000000 00:00 0                          [rollup]
Rss:             2052364 kB
Pss:             1956635 kB
Pss_Anon:         469238 kB
Pss_File:        1487233 kB
Pss_Shmem:           164 kB
Shared_Clean:     104746 kB
Private_Clean:   1477914 kB
Anonymous:        469238 kB
"""


def test_the_resident_part_of_a_file_counts_each_of_its_mappings_and_no_other() -> None:
    # A path with a space, mapped twice; a longer name starting alike is another file.
    assert mapping_rss_mb(SMAPS, "/data/index v1/index.bin") == (1048000 + 4) / 1024
    assert mapping_rss_mb(SMAPS, "/data/other.bin") == 0


def test_the_rollup_gives_the_shared_and_own_fields_in_kb() -> None:
    fields = rollup_kb(ROLLUP)
    assert fields["Pss"] == 1956635 and fields["Rss"] == 2052364
    assert fields["Pss_Anon"] + fields["Pss_File"] == 1956471
    assert "Pss_Shmem" not in fields  # only the fields the bench reports
