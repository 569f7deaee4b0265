#!/usr/bin/env python3
"""Writes the seed corpus of the libFuzzer targets: tests/fuzz/corpus/<target>/<name>.

Each seed is a short, hand-written program in the target's input language (see the
comment at the top of each fuzz_<target>.c), chosen to reach every operation once so that
a short run starts with full operation coverage. Deterministic: rerun it after changing an
input language and commit the result.

    python3 tests/fuzz/make_corpus.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def u16(v):
    return struct.pack("<H", v)


def u32(v):
    return struct.pack("<I", v)


# ---- heap: op, slot, args. op % 13: 0-1 malloc, 2 calloc, 3-4 realloc, 5 aligned_alloc,
# 6 posix_memalign, 7 free, 8 free_sized, 9 usable_size, 10 collect (0x80: force),
# 11 remote thread, 12 requests that must fail. size = class byte (& 7) + u16.
def hsize(cls, v):
    return bytes([cls]) + u16(v)


def heap_seeds():
    small = hsize(0, 24)
    mid = hsize(6, 30000)  # ~60 KiB
    large = hsize(7, 4000)  # 128 KiB + 125 KiB
    return {
        "malloc_free": bytes([0, 1]) + small + bytes([0, 2]) + hsize(4, 3000) + bytes([7, 1, 8, 2]),
        "calloc": bytes([2, 3, 16]) + hsize(4, 100) + bytes([9, 3, 7, 3]),
        "realloc_grow_shrink": bytes([0, 4]) + small + bytes([3, 4]) + mid + bytes([3, 4]) + large
        + bytes([4, 4]) + small + bytes([3, 4]) + hsize(0, 0),
        "aligned": bytes([5, 5, 12]) + hsize(4, 700) + bytes([6, 6, 22]) + large + bytes([6, 7, 2])
        + small + bytes([7, 5, 7, 6]),
        "large_realloc": bytes([1, 8]) + large + bytes([3, 8]) + hsize(7, 9000) + bytes([4, 8])
        + hsize(7, 100) + bytes([8, 8]),
        "collect": bytes([0, 9]) + mid + bytes([7, 9, 10, 0, 0x8a, 0]),
        "remote": b"".join(bytes([0, i]) + hsize(0, 16 * i) for i in range(8))
        + bytes([11, 0]) + u32(0x0F) + u32(0) + u32(0xF000) + hsize(0, 40) + bytes([7, 12]),
        "bad_sizes": bytes([0, 0]) + large + bytes([12, 0, 0, 1]) + small + bytes([12, 1, 12, 2]),
        "many_small": b"".join(bytes([0, i]) + hsize(i % 4, 7 * i) for i in range(40)),
    }


# ---- pool: two pool headers (flags, u16 size [, align byte] [, max byte]), destroy_live
# byte, then op, slot [, arg]. op % 8: 0-1 alloc (0x80: pool 1), 2 free, 3 burst, 4 free
# every k-th, 5 trim, 6 stats, 7 remote thread.
def pool_hdr(flags, v, align=None, maxb=None):
    b = bytes([flags]) + u16(v)
    if flags >> 2 & 1:
        b += bytes([align])
    if flags >> 5 & 1:
        b += bytes([maxb])
    return b


def pool_seeds():
    two = pool_hdr(0, 31) + pool_hdr(1, 200)
    return {
        "alloc_free": two + bytes([0, 0, 0, 1, 0x80, 2, 2, 0, 2, 1, 6, 0]),
        "burst_trim": two + bytes([0, 3, 0, 40, 4, 0, 5, 0, 6, 0]),
        "zero_commit": pool_hdr(0x18, 100) + pool_hdr(0x0A, 5000) + bytes([0, 3, 0, 20, 0x83, 64,
                                                                              20, 4, 1, 6, 0]),
        "aligned": pool_hdr(0x04, 100, align=12) + pool_hdr(0x05, 3000, align=1)
        + bytes([1, 0, 0, 0x80, 1, 2, 0, 6, 0]),
        "max_bytes": pool_hdr(0x20, 255, maxb=1) + pool_hdr(0, 8) + bytes([0, 3, 0, 63, 3, 64, 63,
                                                                              6, 0]),
        "big_objects": pool_hdr(0xC3, 20000) + pool_hdr(0x03, 60000) + bytes([1, 0, 0, 0x80, 1,
                                                                              6, 0, 2, 0]),
        "remote": two + bytes([0, 3, 0, 16, 7, 0]) + u32(0xFF) + u32(0) + u32(0xF00) + u32(0)
        + u32(0) + u32(0) + bytes([6, 0]),
        "destroy_live": two + bytes([1, 3, 0, 10, 0x83, 20, 10]),
    }


# ---- arena: flags byte (1 DONTDUMP, 2 DONTFORK, 4 HUGE_TRY, 8 LOCKED), then op, page, npages [, args]. op % 10: 0-1 anon (prot), 2 memfd
# (0x80: read-only fd; file page, prot), 3 remove, 4 protect (prot), 5 advise (0 DONTNEED,
# 1 REMOVE, 2 WILLNEED, 3 FREE), 6 write, 7 flush, 8 find, 9 bad arguments.
def arena_seeds():
    return {
        "anon_write_remove": bytes([0, 0, 0, 7, 3, 6, 0, 7, 3, 2, 2, 8, 1, 0, 3, 0, 7]),
        "memfd_shared": bytes([0, 2, 0, 3, 0, 3, 2, 10, 3, 0, 3, 6, 0, 3, 8, 11, 0]),
        "readonly_fd": bytes([0, 0x82, 0, 3, 5, 1, 0x82, 4, 2, 5, 3, 4, 0, 1, 3, 5, 0, 1, 1]),
        "protect_split": bytes([0, 0, 0, 15, 3, 4, 4, 3, 1, 6, 0, 15, 8, 5, 0, 4, 0, 15, 3]),
        "advise": bytes([0, 2, 0, 3, 0, 3, 0, 3, 4, 3, 6, 0, 7, 5, 0, 7, 1, 5, 3, 3, 3, 5, 3, 3, 0,
                         6, 3, 3, 5, 3, 3, 2]),
        "flush_find_bad": bytes([5, 0, 60, 3, 1, 7, 60, 3, 7, 0, 3, 8, 61, 0, 9, 0, 0]) + u16(100)
        + u16(4096),
        "locked": bytes([8, 0, 0, 7, 3, 6, 0, 7, 5, 0, 7, 0, 2, 10, 3, 0, 3, 5, 10, 3, 1, 3, 0, 7]),
        "many_mappings": b"".join(bytes([i % 3 if i % 3 != 2 else 2, 2 * i, 0, 0, 3])
                                  for i in range(20)),
    }


# ---- pages: kind/flags byte, then op, page, npages [, arg]. op % 12: 0-1 commit,
# 2 decommit, 3 protect_range (prot), 4 protect (prot), 5 advise (0 DONTNEED, 1 WILLNEED,
# 2 FREE), 6-7 write, 8 mincore, 9 /proc/self/maps, 10 split+merge (0x80: lock+unlock),
# 11 bad arguments.
def pages_seeds():
    cycle = bytes([0, 0, 8, 6, 0, 8, 8, 0, 8, 2, 2, 4, 8, 0, 8, 0, 2, 4, 6, 0, 8])
    return {
        "reserve_commit_cycle": bytes([0]) + cycle,
        "anon": bytes([1]) + bytes([6, 0, 63, 2, 10, 5, 8, 0, 63, 5, 0, 8, 0, 5, 20, 4, 2]),
        "shared_reserve": bytes([2]) + cycle + bytes([0x8a, 10, 4, 0x8a, 60, 4]),
        "memfd_shared": bytes([3]) + bytes([6, 0, 20, 2, 5, 5, 0, 0, 5, 9, 0, 0, 5, 0, 5, 1]),
        "memfd_private": bytes([4]) + bytes([6, 0, 20, 2, 5, 5, 0, 0, 5, 5, 10, 5, 0, 5, 0, 5, 2]),
        "protect": bytes([0x20]) + bytes([0, 0, 30, 3, 4, 4, 1, 9, 0, 0, 4, 0, 0, 7, 4, 0, 0, 1,
                                          9, 0, 0]),
        "jit_lock_split": bytes([0x81]) + bytes([3, 0, 5, 7, 0x8a, 0, 5, 10, 33, 0, 11, 0, 0])
        + u16(5) + u16(4096),
    }


def main():
    for target, seeds in (("heap", heap_seeds()), ("pool", pool_seeds()),
                          ("arena", arena_seeds()), ("pages", pages_seeds())):
        d = os.path.join(HERE, "corpus", target)
        os.makedirs(d, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
