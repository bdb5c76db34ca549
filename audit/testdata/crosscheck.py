#!/usr/bin/env python3
"""Checks residency audit formats with nothing but Python's standard library.

Usage: crosscheck.py leaves.json proof.json

leaves.json: the leaf test vectors; each leaf must re-encode to the same
bytes (json.dumps with compact separators, ensure_ascii=False, field order
kept) and hash to its leaf_hash (SHA-256 of 0x00 || leaf).
proof.json: an inclusion proof; the leaf hash and the RFC 9162 2.1.3.2 fold
of the inclusion path must give the root hash. (The checkpoint's Ed25519
signature needs an Ed25519 library, which the standard library lacks.)
"""
import base64
import hashlib
import json
import sys


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def check_vectors(path):
    for v in json.load(open(path, encoding="utf-8")):
        leaf = v["leaf"]
        again = json.dumps(json.loads(leaf), separators=(",", ":"), ensure_ascii=False)
        if again != leaf:
            sys.exit(f"vector {v['name']!r}: re-encoding differs")
        if leaf_hash(leaf.encode()).hex() != v["leaf_hash"]:
            sys.exit(f"vector {v['name']!r}: leaf hash differs")


def check_proof(path):
    p = json.load(open(path, encoding="utf-8"))
    h = leaf_hash(p["leaf"].encode())
    if h.hex() != p["leaf_hash"]:
        sys.exit("proof: leaf hash differs")
    i, n = p["leaf_index"], p["tree_size"] - 1
    for x in p["inclusion"]:
        x = bytes.fromhex(x)
        if n == 0:
            sys.exit("proof: path too long")
        if i % 2 == 1 or i == n:
            h = hashlib.sha256(b"\x01" + x + h).digest()
            while i % 2 == 0 and i != 0:
                i >>= 1
                n >>= 1
        else:
            h = hashlib.sha256(b"\x01" + h + x).digest()
        i >>= 1
        n >>= 1
    if n != 0 or h.hex() != p["root_hash"]:
        sys.exit("proof: does not lead to the root hash")
    # The root and size must be the signed checkpoint's (lines 2 and 3 of
    # the note: the tree size in decimal, the root in base64); otherwise
    # any leaf "verifies" against a tree of its own making.
    body = p["checkpoint"].split("\n")
    if len(body) < 3 or body[1] != str(p["tree_size"]) or base64.b64decode(body[2], validate=True).hex() != p["root_hash"]:
        sys.exit("proof: tree size or root differs from the checkpoint")


check_vectors(sys.argv[1])
check_proof(sys.argv[2])
print("ok")
