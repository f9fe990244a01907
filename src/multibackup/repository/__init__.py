"""The repository format: chunks, blobs, packs, index, trees, snapshots, keys and locks.

See docs/format.md for the byte-level description.
"""
