"""Property-based fuzzing (hypothesis) of everything that reads user bytes: whatever arrives,
the decoder returns an 8-bit image or raises `ImageError` with a message, and the CSV and zip
readers return results and problems — never another exception. Bounded to run in seconds."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

from broken_inputs import cases
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mssl_core.labeling.images import ImageError, decode_image, expand_uploads, read_label_csv

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
SEEDS = [c.content for c in cases() if c.good and len(c.content) < 20_000]


@st.composite
def mutated(draw, seeds=tuple(SEEDS)) -> bytes:
    """A valid file with a few bytes overwritten, then maybe truncated."""
    content = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        content[draw(st.integers(0, len(content) - 1))] = draw(st.integers(0, 255))
    return bytes(content[: draw(st.integers(0, len(content)))])


def _decodes_or_explains(content: bytes) -> None:
    try:
        image = decode_image(content)
    except ImageError as error:
        assert str(error)
    else:
        assert image.mode in ("L", "RGB") and max(image.size) <= 1024


@FUZZ
@given(st.binary(max_size=4096))
def test_decoder_on_random_bytes(content):
    _decodes_or_explains(content)


@FUZZ
@given(mutated())
def test_decoder_on_damaged_images(content):
    _decodes_or_explains(content)


@FUZZ
@given(st.text(max_size=600))
def test_label_csv_reader_on_any_text(text):
    labels, problems = read_label_csv(text.encode("utf-8", errors="surrogatepass"))
    assert all(isinstance(k, str) and v for k, v in labels.items())
    assert all(isinstance(where, str) and why for where, why in problems)


def _zip_of(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members:
            archive.writestr(name, content)
    return buffer.getvalue()


member_names = st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=1, max_size=30)


@FUZZ
@given(
    st.lists(st.tuples(member_names, st.binary(max_size=200)), max_size=6),
    st.integers(0, 40),
    st.binary(max_size=8),
)
def test_zip_reader_on_odd_names_and_damaged_archives(members, cut, garbage):
    archive = _zip_of(members)
    for content in (archive, archive[: max(0, len(archive) - cut)] + garbage):
        with tempfile.TemporaryDirectory() as folder:  # hypothesis reruns: no tmp_path fixture
            files, problems = expand_uploads([("upload.zip", io.BytesIO(content))], Path(folder))
        assert all(f.name not in ("", ".", "..") and "/" not in f.name for f in files)
        assert all(why for _, why in problems)
