"""The cached hashids codec gives exactly the library's strings, and accepts exactly its strings."""

from hashids import Hashids
from hypothesis import given
from hypothesis import strategies as st

from tracker.hashid_codec import MAX_CACHED_NUMBERS, HashidCodec

SALTS = ("fairclick:click", "fairclick:open", "")
ids = st.lists(st.integers(min_value=0, max_value=2**63), min_size=1, max_size=4)
hashid_alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ1234567890"


@given(salt=st.sampled_from(SALTS), min_length=st.integers(0, 12), values=ids)
def test_encodes_as_hashids_does(salt, min_length, values):
    reference = Hashids(salt=salt, min_length=min_length)
    codec = HashidCodec(salt, min_length)
    encoded = codec.encode(*values)
    assert encoded == reference.encode(*values)
    assert codec.decode(encoded) == tuple(values)


@given(
    salt=st.sampled_from(SALTS),
    min_length=st.integers(0, 8),
    text=st.one_of(st.text(alphabet=hashid_alphabet, max_size=14), st.text(max_size=10)),
)
def test_decodes_any_string_as_hashids_does(salt, min_length, text):
    reference = Hashids(salt=salt, min_length=min_length)
    assert HashidCodec(salt, min_length).decode(text) == reference.decode(text)


@given(salt=st.sampled_from(SALTS), values=ids, data=st.data())
def test_an_altered_hashid_decodes_as_hashids_does(salt, values, data):
    reference = Hashids(salt=salt, min_length=6)
    encoded = reference.encode(*values)
    at = data.draw(st.integers(0, len(encoded) - 1))
    altered = encoded[:at] + data.draw(st.sampled_from(hashid_alphabet)) + encoded[at + 1 :]
    assert HashidCodec(salt, 6).decode(altered) == reference.decode(altered)


def test_refuses_what_hashids_refuses():
    codec = HashidCodec("fairclick:click", 6)
    assert codec.encode() == ""
    assert codec.encode(-1, 2) == ""
    assert codec.decode("") == ()


def test_long_strings_are_left_to_the_library_and_remember_nothing():
    codec = HashidCodec("fairclick:click", 6)
    values = tuple(range(1, 40))
    encoded = codec.encode(*values)
    assert encoded == Hashids(salt="fairclick:click", min_length=6).encode(*values)
    assert codec.decode(encoded) == values
    assert all(len(chain) <= MAX_CACHED_NUMBERS for chain in codec._chains.values())
