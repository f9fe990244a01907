"""Property tests of the on-disk format: every encoder/decoder pair and every seal is exact.

The repository format is a promise to future readers, so each layer is checked on arbitrary
inputs: what goes in comes out, and any damage is caught as an IntegrityError, never
returned as data or raised as some other exception.
"""

from __future__ import annotations

import io
import json
import os
import random
import tempfile
import uuid

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from multibackup.backends import open_store, parse_location
from multibackup.engine.check import expected_pack_size
from multibackup.errors import IntegrityError
from multibackup.repository import keys
from multibackup.repository.blob import (
    RAW,
    ZSTD,
    BlobType,
    blob_body,
    compress,
    decompress,
    open_blob,
    seal_blob,
)
from multibackup.repository.chunker import Chunker, ChunkerParams
from multibackup.repository.crypto import (
    OVERHEAD,
    Cipher,
    KDFParams,
    MasterKey,
    unwrap_key,
    wrap_key,
)
from multibackup.repository.index import Index, decode_index, decode_index_raw, encode_index
from multibackup.repository.pack import PackBuilder, PackEntry, parse_pack
from multibackup.repository.repository import Repository
from multibackup.repository.tree import (
    DEVICES,
    DIR,
    FILE,
    SPECIAL,
    SYMLINK,
    Node,
    decode_tree,
    encode_tree,
    is_safe_name,
)

PARAMS = ChunkerParams(min_size=256, avg_size=1024, max_size=8192)
CIPHER = Cipher(MasterKey.generate())
FAST_KDF = KDFParams(n=2**10)

props = settings(max_examples=60, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
few = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def payloads(draw: st.DrawFn, max_size: int = 64 * 1024) -> bytes:
    """Random, repetitive (compressible) or hypothesis-shrunk bytes, up to max_size."""
    kind = draw(st.sampled_from(["binary", "random", "text", "zeros"]))
    if kind == "binary":
        return draw(st.binary(max_size=min(max_size, 4096)))
    size = draw(st.integers(0, max_size))
    rng = random.Random(draw(st.integers(0, 2**32)))
    if kind == "random":
        return rng.randbytes(size)
    if kind == "zeros":
        return bytes(size)
    words = [rng.choice([b"alpha ", b"beta ", b"gamma\n", b"<p>", b"</p>\n"]) for _ in range(size // 4)]
    return b"".join(words)[:size]


def chunks_of(data: bytes) -> list[bytes]:
    return [bytes(c) for c in Chunker(PARAMS).split_buffer(data)]


class ShortReads(io.RawIOBase):
    """A stream that hands out at most ``step`` bytes per read, like a pipe or socket."""

    def __init__(self, data: bytes, step: int) -> None:
        self._buf = io.BytesIO(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        n = min(len(b), self._step)
        got = self._buf.read(n)
        b[:len(got)] = got
        return len(got)


# ---- chunker ------------------------------------------------------------------------------


@props
@given(payloads(max_size=96 * 1024))
def test_chunks_concatenate_to_input_within_bounds(data: bytes) -> None:
    chunks = chunks_of(data)
    assert b"".join(chunks) == data
    assert all(PARAMS.min_size <= len(c) <= PARAMS.max_size for c in chunks[:-1])
    if chunks:
        assert 1 <= len(chunks[-1]) <= PARAMS.max_size
    assert chunks_of(data) == chunks  # deterministic, also on a fresh chunker


@props
@given(payloads(max_size=96 * 1024), st.integers(1, 9000))
def test_split_stream_equals_split_buffer(data: bytes, step: int) -> None:
    expected = chunks_of(data)
    ch = Chunker(PARAMS)
    # Views from split_stream are only valid until the next one is taken: copy each.
    assert [bytes(c) for c in ch.split_stream(io.BytesIO(data))] == expected
    assert [bytes(c) for c in ch.split_stream(ShortReads(data, step))] == expected


@props
@given(st.integers(0, 2**32), st.integers(1, 300), st.floats(0.2, 0.8))
def test_insertion_keeps_most_chunks(seed: int, insert_len: int, where: float) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(256 * 1024)
    pos = int(len(data) * where)
    edited = data[:pos] + rng.randbytes(insert_len) + data[pos:]
    before, after = chunks_of(data), chunks_of(edited)
    shared = set(before) & set(after)
    unshared = sum(len(c) for c in before if c not in shared)
    # Content-defined boundaries resynchronise a few chunks after the edit.
    assert unshared <= 4 * PARAMS.max_size
    assert len(shared) >= 0.9 * len(set(before))


def test_chunker_params_round_trip() -> None:
    assert ChunkerParams.from_dict(PARAMS.to_dict()) == PARAMS


# ---- compression and blobs ----------------------------------------------------------------


@props
@given(payloads(), st.sampled_from([0, 1, 3]))
def test_seal_open_blob_round_trip(data: bytes, level: int) -> None:
    blob_id = CIPHER.blob_id(data)
    sealed = seal_blob(CIPHER, blob_id, data, level)
    assert open_blob(CIPHER, blob_id, sealed, len(data)) == data
    assert open_blob(CIPHER, blob_id, memoryview(sealed), len(data)) == data
    # the body is raw exactly when it is as long as the data: no tag byte for blobs
    assert (len(sealed) - OVERHEAD == len(data)) == (blob_body(data, level) is data)
    with pytest.raises(IntegrityError):  # a wrong recorded raw length never passes
        open_blob(CIPHER, blob_id, sealed, len(data) + 1)


@props
@given(st.integers(8 * 32 * 1024, 300_000), st.integers(0, 2**32))
def test_incompressible_chunks_are_sealed_without_compressing(size: int, seed: int) -> None:
    data = random.Random(seed).randbytes(size)
    assert blob_body(data, 3) is data
    text = (b"INSERT INTO t VALUES (1, 'x');\n" * (size // 30 + 1))[:size]
    assert len(blob_body(text, 3)) < size // 10


@props
@given(payloads(max_size=8192), st.sampled_from([0, 1, 3]), st.data())
def test_any_flipped_bit_in_a_blob_is_detected(data: bytes, level: int, pick: st.DataObject) -> None:
    blob_id = CIPHER.blob_id(data)
    sealed = bytearray(seal_blob(CIPHER, blob_id, data, level))
    bit = pick.draw(st.integers(0, len(sealed) * 8 - 1))
    sealed[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(IntegrityError):
        open_blob(CIPHER, blob_id, bytes(sealed), len(data))


@props
@given(payloads(max_size=8192), st.binary(min_size=32, max_size=32))
def test_blob_under_a_wrong_id_is_rejected(data: bytes, other: bytes) -> None:
    blob_id = CIPHER.blob_id(data)
    assume(other != blob_id)
    sealed = seal_blob(CIPHER, blob_id, data, 3)
    with pytest.raises(IntegrityError):
        open_blob(CIPHER, other, sealed, len(data))
    with pytest.raises(IntegrityError):
        open_blob(CIPHER, blob_id, sealed[:-1], len(data))
    with pytest.raises(IntegrityError):
        open_blob(Cipher(MasterKey.generate()), blob_id, sealed, len(data))


@props
@given(payloads(), st.integers(0, 9))
def test_compress_round_trip(data: bytes, level: int) -> None:
    payload = compress(data, level)
    assert payload[0] in (RAW, ZSTD)
    assert len(payload) <= len(data) + 1  # never grows by more than the tag
    assert decompress(payload) == data
    assert decompress(payload, raw_length=len(data)) == data
    if level == 0:
        assert payload[0] == RAW


@props
@given(st.integers(65, 200_000), st.integers(0, 2**32), st.sampled_from([1, 3, 9]))
def test_incompressible_data_stays_raw(size: int, seed: int, level: int) -> None:
    data = random.Random(seed).randbytes(size)
    payload = compress(data, level)
    assert payload[0] == RAW and payload[1:] == data


def test_compressible_data_is_compressed() -> None:
    data = b"INSERT INTO t VALUES (1, 'x');\n" * 1000
    payload = compress(data, 3)
    assert payload[0] == ZSTD and len(payload) < len(data) // 10


@props
@given(st.binary(max_size=64))
def test_bad_payload_tags_are_integrity_errors(body: bytes) -> None:
    with pytest.raises(IntegrityError):
        decompress(b"")
    with pytest.raises(IntegrityError):
        decompress(b"\x07" + body)
    if not body.startswith(b"\x28\xb5\x2f\xfd"):  # not by chance a zstd frame
        with pytest.raises(IntegrityError):
            decompress(b"\x01" + body)


# ---- packs --------------------------------------------------------------------------------


def build_pack(blobs: list[tuple[BlobType, bytes]], level: int = 1) -> tuple[bytes, list[PackEntry]]:
    builder = PackBuilder()
    for kind, data in blobs:
        blob_id = CIPHER.blob_id(data)
        builder.add(kind, blob_id, seal_blob(CIPHER, blob_id, data, level), len(data))
    entries = list(builder.entries)
    return builder.finish(CIPHER), entries


blob_lists = st.lists(st.tuples(st.sampled_from(list(BlobType)), payloads(max_size=4096)),
                      max_size=12)


@props
@given(blob_lists)
def test_pack_round_trip(blobs: list[tuple[BlobType, bytes]]) -> None:
    pack, built = build_pack(blobs)
    entries = parse_pack(CIPHER, pack, "pack")
    assert entries == built
    assert [(e.type, e.id, e.raw_length) for e in entries] == [
        (k, CIPHER.blob_id(d), len(d)) for k, d in blobs]
    assert expected_pack_size(entries) == len(pack)  # what check compares sizes with
    for e, (_, data) in zip(entries, blobs, strict=True):
        assert open_blob(CIPHER, e.id, pack[e.offset:e.offset + e.length], e.raw_length) == data


@props
@given(blob_lists, st.data())
def test_truncated_pack_is_rejected(blobs: list[tuple[BlobType, bytes]], pick: st.DataObject) -> None:
    pack, _ = build_pack(blobs)
    cut = pick.draw(st.integers(0, len(pack) - 1))
    with pytest.raises(IntegrityError):
        parse_pack(CIPHER, pack[:cut], "pack")
    if cut:
        with pytest.raises(IntegrityError):
            parse_pack(CIPHER, pack[cut:], "pack")  # lost its start


@props
@given(blob_lists, st.data())
def test_damaged_pack_header_is_rejected(blobs: list[tuple[BlobType, bytes]],
                                         pick: st.DataObject) -> None:
    pack, built = build_pack(blobs)
    body = max((e.offset + e.length for e in built), default=0)
    pos = pick.draw(st.integers(body, len(pack) - 1))  # sealed header or its length
    damaged = bytearray(pack)
    damaged[pos] ^= pick.draw(st.integers(1, 255))
    with pytest.raises(IntegrityError):
        parse_pack(CIPHER, bytes(damaged), "pack")


@props
@given(blob_lists.filter(bool), st.data())
def test_damaged_blob_in_pack_is_detected(blobs: list[tuple[BlobType, bytes]],
                                          pick: st.DataObject) -> None:
    pack, built = build_pack(blobs)
    victim = pick.draw(st.sampled_from(built))
    pos = pick.draw(st.integers(victim.offset, victim.offset + victim.length - 1))
    damaged = bytearray(pack)
    damaged[pos] ^= 0x40
    assert parse_pack(CIPHER, bytes(damaged), "pack") == built  # header still fine
    with pytest.raises(IntegrityError):
        open_blob(CIPHER, victim.id, bytes(damaged[victim.offset:victim.offset + victim.length]),
                  victim.raw_length)


# ---- index --------------------------------------------------------------------------------

ids = st.binary(min_size=32, max_size=32)
# Ids that often share their first bytes, to exercise the index table's prefix buckets.
near_ids = st.one_of(ids, st.tuples(st.sampled_from([b"\x00\x00", b"\x00\x01", b"\xff\xff"]),
                                    st.binary(min_size=30, max_size=30)).map(b"".join))
u32 = st.integers(0, 2**32 - 1)
entries_st = st.builds(PackEntry, st.sampled_from(list(BlobType)), near_ids, u32, u32, u32)
packs_st = st.dictionaries(ids, st.lists(entries_st, max_size=6), max_size=6)


@props
@given(packs_st, st.lists(ids, max_size=4))
def test_index_round_trip(packs: dict[bytes, list[PackEntry]], supersedes: list[bytes]) -> None:
    data = encode_index(packs, supersedes)
    got, sup = decode_index(data, "index")
    assert got == packs and list(got) == list(packs)
    assert sup == supersedes


@props
@given(packs_st, st.lists(ids, max_size=3), st.binary(min_size=1, max_size=40), st.data())
def test_index_damage_is_rejected(packs: dict[bytes, list[PackEntry]], supersedes: list[bytes],
                                  garbage: bytes, pick: st.DataObject) -> None:
    data = encode_index(packs, supersedes)
    with pytest.raises(IntegrityError):
        decode_index(data + garbage, "index")
    cut = pick.draw(st.integers(0, len(data) - 1))
    with pytest.raises(IntegrityError):
        decode_index(data[:cut], "index")


def assert_index_matches(index: Index, first: dict[bytes, tuple[bytes, PackEntry]]) -> None:
    assert len(index) == len(first) and sorted(index.blob_ids()) == sorted(first)
    for blob_id, (pack_id, e) in first.items():
        loc = index.lookup(blob_id)
        assert loc is not None and blob_id in index
        assert (loc.pack_id, loc.type, loc.offset, loc.length, loc.raw_length) == (
            pack_id, e.type, e.offset, e.length, e.raw_length)


@props
@given(packs_st, st.lists(st.booleans(), min_size=6, max_size=6), st.lists(near_ids, max_size=5))
def test_index_lookup_agrees_with_entries(packs: dict[bytes, list[PackEntry]],
                                          compact_after: list[bool], absent: list[bytes]) -> None:
    index = Index()
    first: dict[bytes, tuple[bytes, PackEntry]] = {}
    for (pack_id, entries), compact in zip(packs.items(), compact_after, strict=False):
        index.add_pack(pack_id, entries)
        for e in entries:
            first.setdefault(e.id, (pack_id, e))  # the first location of a blob wins
        if compact:  # blobs then live in the sorted table rather than the delta dict
            index.compact()
        assert_index_matches(index, first)
    index.compact()
    assert_index_matches(index, first)
    assert index.pack_ids() == list(packs)
    assert all(index.has_pack(p) for p in packs)
    for blob_id in absent:
        if blob_id not in first:
            assert index.lookup(blob_id) is None and blob_id not in index


# Packs that often share blobs (an id pool of eight), as packs written by interrupted runs do.
shared_packs_st = st.lists(near_ids, min_size=8, max_size=8, unique=True).flatmap(
    lambda pool: st.dictionaries(ids, st.lists(st.builds(
        PackEntry, st.sampled_from(list(BlobType)), st.sampled_from(pool), u32, u32, u32),
        max_size=6), max_size=6))


@props
@given(st.one_of(packs_st, shared_packs_st),
       st.lists(st.sampled_from(["raw", "entries", "compact"]), min_size=6, max_size=6))
def test_index_loaded_from_stored_records_agrees_with_entries(
        packs: dict[bytes, list[PackEntry]], ways: list[str]) -> None:
    """Packs added as an index file stores them (as load_index does), mixed with packs
    added entry by entry (as a backup does): every blob is found where it was first put."""
    raw, _ = decode_index_raw(encode_index(packs), "index")
    index = Index()
    first: dict[bytes, tuple[bytes, PackEntry]] = {}
    for (pack_id, entries), way in zip(packs.items(), ways, strict=False):
        if way == "entries":
            index.add_pack(pack_id, entries)
        else:
            index.add_pack_records(pack_id, raw[pack_id])
            if way == "compact":
                index.compact()
        for e in entries:
            first.setdefault(e.id, (pack_id, e))
    assert_index_matches(index, first)
    assert index.pack_ids() == list(packs)


@props
@given(packs_st.filter(lambda p: any(p.values())), st.integers(2, 255), st.data())
def test_index_with_an_unknown_blob_type_is_rejected(packs: dict[bytes, list[PackEntry]],
                                                     kind: int, pick: st.DataObject) -> None:
    data = bytearray(encode_index(packs))
    first_entry = 4 + 4 + 4 + 36  # magic, no supersedes, pack count, first pack's id and count
    pack_no = pick.draw(st.sampled_from([i for i, e in enumerate(packs.values()) if e]))
    offset = first_entry + sum(45 * len(e) + 36 for e in list(packs.values())[:pack_no])
    data[offset] = kind
    with pytest.raises(IntegrityError):
        decode_index(bytes(data), "index")


# ---- trees --------------------------------------------------------------------------------

odd_names = st.one_of(
    st.text(min_size=1, max_size=40),
    st.sampled_from(["with space", " lead", "trail ", "ünïcødé", "日本語.txt", "emoji 🎉",
                     "-rf", "*?[", "new\nline", "back\\slash", "..."]),
    st.binary(min_size=1, max_size=30).map(os.fsdecode),  # non-UTF-8 bytes: surrogateescape
)
i64 = st.integers(0, 2**63 - 1)


@st.composite
def nodes(draw: st.DrawFn) -> Node:
    kind = draw(st.sampled_from([FILE, DIR, SYMLINK, *sorted(SPECIAL)]))
    node = Node(draw(odd_names), kind, mode=draw(st.integers(0, 0o7777)), mtime=draw(i64),
                uid=draw(st.integers(0, 2**32 - 1)), gid=draw(st.integers(0, 2**32 - 1)))
    if kind == FILE:
        node.size, node.ctime, node.inode, node.device = draw(i64), draw(i64), draw(i64), draw(i64)
        node.links = draw(st.integers(1, 1000))
        node.content = draw(st.lists(ids, max_size=4))
    elif kind == DIR:
        node.subtree = draw(st.one_of(st.none(), ids))
    elif kind == SYMLINK:
        node.target = draw(odd_names)
    elif kind in DEVICES:
        node.rdev = draw(i64)
    return node


@props
@given(st.lists(nodes(), max_size=8))
def test_tree_round_trip(tree: list[Node]) -> None:
    data = encode_tree(tree)
    assert decode_tree(data) == sorted(tree, key=lambda n: n.name)
    assert encode_tree(decode_tree(data)) == data  # canonical: same tree, same bytes, same id
    # the documented canonical form: JSON with sorted keys and compact separators
    doc = {"nodes": [n.to_json() for n in sorted(tree, key=lambda n: n.name)]}
    assert data == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode(
        "utf-8", "surrogateescape")


@props
@given(st.lists(st.text(st.characters(max_codepoint=0x7F), min_size=1, max_size=20),
                min_size=1, max_size=6, unique=True))
def test_ascii_trees_encode_as_the_canonical_json(names: list[str]) -> None:
    """Plain ASCII names take the fast encoder: its bytes must be the canonical ones,
    control characters and DEL included (a tree's id is the hash of these bytes)."""
    files = [Node(n, FILE, mode=0o644, mtime=2**63 - 1, size=2**64 - 1, content=[b"\x01" * 32])
             for n in names]
    for tree in (files, [*files, Node("big", FILE, device=2**64)]):
        doc = {"nodes": [n.to_json() for n in sorted(tree, key=lambda n: n.name)]}
        canonical = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        assert encode_tree(tree) == canonical
        if tree is files and not any("\x7f" in n for n in names):
            assert orjson.dumps(doc) == canonical  # the fast encoder wrote these bytes


@props
@given(st.binary(min_size=1, max_size=30))
def test_non_utf8_names_survive_as_the_same_bytes(raw: bytes) -> None:
    name = os.fsdecode(raw)
    (back,) = decode_tree(encode_tree([Node(name, SYMLINK, target=name)]))
    assert os.fsencode(back.name) == raw and os.fsencode(back.target) == raw


@props
@given(st.binary(max_size=200))
def test_garbage_tree_is_an_integrity_error(data: bytes) -> None:
    try:
        decode_tree(data)
    except IntegrityError:
        pass


@props
@given(st.text(max_size=20))
def test_is_safe_name(name: str) -> None:
    unsafe = name in ("", ".", "..") or "/" in name or "\x00" in name
    assert is_safe_name(name) is (not unsafe)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/", "../x", "x\x00y", "\x00"])
def test_is_safe_name_rejects(name: str) -> None:
    assert not is_safe_name(name)


# ---- key slots ----------------------------------------------------------------------------

passwords = st.text(min_size=1, max_size=30)


@few
@given(passwords, passwords, st.binary(min_size=16, max_size=32))
def test_key_wrap_round_trip(password: str, other: str, salt: bytes) -> None:
    master = MasterKey.generate()
    wrapped = wrap_key(master, password.encode(), FAST_KDF, salt)
    assert unwrap_key(wrapped, password.encode(), FAST_KDF, salt) == master
    if other != password:
        assert unwrap_key(wrapped, other.encode(), FAST_KDF, salt) is None
    assert unwrap_key(wrapped, password.encode(), FAST_KDF, salt[::-1] + b"x") is None


@few
@given(passwords)
def test_key_slot_encode_decode(password: str) -> None:
    master = MasterKey.generate()
    slot = keys.new_slot(master, password, FAST_KDF)
    back = keys.KeySlot.decode(slot.id, slot.encode())
    assert back == slot
    assert unwrap_key(back.wrapped, password.encode(), back.params, back.salt) == master
    assert unwrap_key(back.wrapped, password.encode() + b"!", back.params, back.salt) is None


# ---- repository on a memory store ---------------------------------------------------------


@few
@given(st.lists(st.tuples(st.sampled_from(list(BlobType)), payloads(max_size=6000)),
                max_size=25),
       st.sampled_from([0, 3]))
def test_repository_blobs_survive_reopen(blobs: list[tuple[BlobType, bytes]], level: int) -> None:
    store = open_store(parse_location(f"memory://props-{uuid.uuid4().hex}"))
    with Repository.init(store, "pw", chunker=PARAMS, pack_size=1024 * 1024, compression=level,
                         kdf=FAST_KDF) as repo:
        repo.config.pack_size = 4096  # in this process only: a few KiB of blobs fill many packs
        saved: dict[bytes, bytes] = {}
        for kind, data in blobs:
            blob_id, new = repo.save_blob(kind, data)
            assert blob_id == repo.cipher.blob_id(data)
            assert new == (blob_id not in saved)
            saved[blob_id] = data
        repo.flush()
        assert repo.stats.data_blobs + repo.stats.tree_blobs == len(saved)
        if repo.stats.bytes_stored > 4 * 4096:
            assert repo.stats.packs >= 2
        for blob_id, data in saved.items():
            assert repo.load_blob(blob_id) == data
    with tempfile.TemporaryDirectory() as cache_dir:
        for cache in (None, cache_dir, cache_dir):  # no cache, cold cache, warm cache
            with Repository.open(store, "pw", cache_dir=cache) as again:
                report = again.load_index()
                assert report.recovered_packs == [] and report.damaged_packs == []
                assert report.damaged_index_files == []
                assert len(again.index) == len(saved)
                for blob_id, data in saved.items():
                    assert again.load_blob(blob_id) == data
                    assert again.save_blob(BlobType.DATA, data) == (blob_id, False)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["name", "type", "mode", "subtree", "content", "target", "size", "x"]),
        inner, max_size=4),
    max_leaves=10)


@props
@given(json_values)
def test_malformed_tree_json_is_an_integrity_error(value: object) -> None:
    import json

    for doc in (value, {"nodes": value}, {"nodes": [value]}):
        data = json.dumps(doc).encode()
        try:
            decode_tree(data)
        except IntegrityError:
            pass


# ---- sparse restore -------------------------------------------------------------------------

@props
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 200_000)), min_size=1, max_size=8),
       st.integers(0, 300_000))
def test_sparse_restore_writes_every_nonzero_byte(parts: list[tuple[bool, int]],
                                                  offset: int) -> None:
    """What a sparse restore writes of a blob, put into a file of zeros, is the blob."""
    from multibackup.engine.restore import _data_runs

    data = b"".join(os.urandom(n) if noisy else bytes(n) for noisy, n in parts)
    out = bytearray(len(data))
    written = 0
    for start, end in _data_runs(data, offset):
        out[start:end] = data[start:end]
        written += end - start
    assert bytes(out) == data
    if not any(noisy for noisy, _ in parts):
        assert written == 0  # a blob of zeros is a hole all through
