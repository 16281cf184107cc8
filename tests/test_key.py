from __future__ import annotations

import hashlib
import hmac
import os
import stat

import numpy as np
import pytest

from hf_poscuda import KeyFileError, PosCUDAKey


def test_generate_is_random_and_key_id_is_public_hash():
    a, b = PosCUDAKey.generate(), PosCUDAKey.generate()
    assert a != b and a.key_id != b.key_id
    assert len(a.key_id) == 16 and int(a.key_id, 16) >= 0


def test_repr_and_str_never_show_the_secret(key):
    secret_hex = bytes(range(32)).hex()
    for text in (repr(key), str(key), f"{key}"):
        assert secret_hex not in text and secret_hex[:16] not in text
        assert key.key_id in text


def test_save_creates_0600_and_roundtrips(tmp_path, key):
    old = os.umask(0)  # even with a permissive umask the file must be private
    try:
        path = key.save(tmp_path / "k.key")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert PosCUDAKey.load(path) == key


def test_save_refuses_to_overwrite(tmp_path, key, other_key):
    key.save(tmp_path / "k.key")
    with pytest.raises(KeyFileError, match="already exists"):
        other_key.save(tmp_path / "k.key")
    other_key.save(tmp_path / "k.key", overwrite=True)
    assert PosCUDAKey.load(tmp_path / "k.key") == other_key


def test_load_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist.*keygen"):
        PosCUDAKey.load(tmp_path / "nope.key")


def test_load_refuses_file_readable_by_others(tmp_path, key):
    path = key.save(tmp_path / "k.key")
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600") as info:
        PosCUDAKey.load(path)
    assert bytes(range(32)).hex() not in str(info.value)


@pytest.mark.parametrize("content", [b"hello world\n", b"hf-poscuda-key v1\nzz\n", b"", b"\x00\xff" * 40])
def test_load_refuses_files_that_are_not_keys(tmp_path, content):
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError):
        PosCUDAKey.load(path)


def test_secret_length_is_checked():
    with pytest.raises(ValueError, match="32 bytes"):
        PosCUDAKey(b"short")


def test_uniform_matches_an_independent_hmac_counter_reference(key):
    """Pin the derivation: the same numbers on any machine and any numpy version."""
    got = key.uniform("filter", 3, 6)
    label = b"filter\x003\x00"
    stream = b"".join(hmac.new(bytes(range(32)), label + c.to_bytes(8, "big"), hashlib.sha256).digest() for c in (0, 1))
    expected = [(int.from_bytes(stream[8 * i : 8 * i + 8], "big") >> 11) / 2**53 for i in range(6)]
    assert got.tolist() == expected
    assert np.all((got >= 0) & (got < 1))


def test_uniform_depends_on_purpose_index_and_secret(key, other_key):
    base = key.uniform("filter", 0, 8)
    assert not np.array_equal(base, key.uniform("position", 0, 8))
    assert not np.array_equal(base, key.uniform("filter", 1, 8))
    assert not np.array_equal(base, other_key.uniform("filter", 0, 8))
    assert np.array_equal(base[:3], key.uniform("filter", 0, 3))  # prefix-stable
