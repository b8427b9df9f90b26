#!/usr/bin/env python3
"""Independent check of two docs/keys.md test vectors, in pure Python.

Implements only what the vectors need: XXH3-128 with seed 0 for inputs of
17..128 bytes, written from the xxHash specification (XXH3 "17to128" path).
Exit status 0 when both vectors match.
"""
import struct
import sys

M64 = (1 << 64) - 1
PRIME64_1 = 0x9E3779B185EBCA87
PRIME64_2 = 0xC2B2AE3D27D4EB4F
PRIME64_4 = 0x85EBCA77C2B2AE63
# First 128 bytes of XXH3's default secret (xxHash specification).
SECRET = bytes.fromhex(
    "b8fe6c3923a44bbe7c01812cf721ad1cded46de9839097db7240a4a4b7b3671f"
    "cb79e64eccc0e578825ad07dccff7221b8084674f743248ee03590e6813a264c"
    "3c2852bb91c300cb88d0658b1b532ea371644897a20df94e3819ef46a9deacd8"
    "a8fa763fe39c343ff9dcbbc7c70b4f1d8a51e04bcdb45931c89f7ec9d9787364")


def le64(data, at):
    return struct.unpack_from("<Q", data, at)[0]


def mul128_fold64(a, b):
    product = a * b
    return (product & M64) ^ (product >> 64)


def avalanche(h):
    h ^= h >> 37
    h = (h * 0x165667919E3779F9) & M64
    return h ^ (h >> 32)


def mix16(data, at, secret_at, seed=0):
    return mul128_fold64(le64(data, at) ^ ((le64(SECRET, secret_at) + seed) & M64),
                         le64(data, at + 8) ^ ((le64(SECRET, secret_at + 8) - seed) & M64))


def mix32(acc_lo, acc_hi, data, at1, at2, secret_at):
    acc_lo = (acc_lo + mix16(data, at1, secret_at)) & M64
    acc_lo ^= (le64(data, at2) + le64(data, at2 + 8)) & M64
    acc_hi = (acc_hi + mix16(data, at2, secret_at + 16)) & M64
    acc_hi ^= (le64(data, at1) + le64(data, at1 + 8)) & M64
    return acc_lo, acc_hi


def xxh3_128_hex(data):
    n = len(data)
    assert 16 < n <= 128, "this check only implements 17..128-byte inputs"
    lo, hi = (n * PRIME64_1) & M64, 0
    if n > 32:
        if n > 64:
            if n > 96:
                lo, hi = mix32(lo, hi, data, 48, n - 64, 96)
            lo, hi = mix32(lo, hi, data, 32, n - 48, 64)
        lo, hi = mix32(lo, hi, data, 16, n - 32, 32)
    lo, hi = mix32(lo, hi, data, 0, n - 16, 0)
    out_lo = avalanche((lo + hi) & M64)
    out_hi = (-avalanche((lo * PRIME64_1 + hi * PRIME64_4 + n * PRIME64_2) & M64)) & M64
    return "%016x%016x" % (out_hi, out_lo)


def string(s):
    b = s.encode()
    return struct.pack("<I", len(b)) + b


def namespace_encoding():
    return (string("seqkv.namespace.v1") + string("tinyllama-12m") +
            string("00112233445566778899aabbccddeeff") + string("bf16") + string("lhtd") +
            struct.pack("<III", 0, 1, 256) + string("lossless") + string(""))


def main():
    ns_hex = xxh3_128_hex(namespace_encoding())
    key_hex = xxh3_128_hex(bytes.fromhex(ns_hex) + struct.pack("<4i", 1, 2, 3, 4))
    ok = (ns_hex == "dd196387e0e104bcf165c83c0c76c9a7" and key_hex == "320d53de9318dab00c4273baa430d3b9")
    print("NamespaceId(F)            ", ns_hex)
    print("NextChunkKey(ns, [1,2,3,4])", key_hex)
    print("match" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
