import io

import numpy as np
import pytest
from PIL import Image

from mssl_core.labeling.images import ImageError, class_folder_files, decode_image, list_files


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"<html>not an image</html>", "not an image"),
        (_png_bytes(Image.new("RGB", (64, 64), "red"))[:80], "truncated|cannot be decoded"),
    ],
)
def test_bad_files_raise_a_readable_reason(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=reason):
        decode_image(path)


def test_sixteen_bit_and_transparent_images_become_eight_bit(tmp_path):
    sixteen = Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16))
    sixteen.save(tmp_path / "16.png")
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    rgba.save(tmp_path / "rgba.png")
    assert decode_image(tmp_path / "16.png").mode == "L"
    decoded = decode_image(tmp_path / "rgba.png")
    assert decoded.mode == "RGB" and decoded.getpixel((0, 0)) == (255, 255, 255)


def test_large_images_are_downscaled(tmp_path):
    Image.new("L", (3000, 1500)).save(tmp_path / "big.png")
    assert max(decode_image(tmp_path / "big.png").size) == 1024


def test_folders_skip_hidden_and_macosx(tmp_path):
    for name in ("a/1.png", "a/.hidden.png", "__MACOSX/a/1.png", "b/2.png", "loose.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_files(tmp_path)] == ["1.png", "2.png", "loose.png"]
    assert [(f.path.name, f.label) for f in class_folder_files(tmp_path)] == [
        ("1.png", "a"),
        ("2.png", "b"),
    ]


def test_a_zip_member_without_a_file_name_is_reported_not_a_crash(tmp_path):
    import io
    import zipfile

    from mssl_core.labeling.images import expand_uploads

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(".", b"")  # found by the fuzz test: Path(".").parts is empty
        archive.writestr("cats/a.png", b"png bytes")
    files, problems = expand_uploads([("odd.zip", buffer)], tmp_path)
    assert [(f.name, f.label) for f in files] == [("a.png", "cats")]
    assert problems == [("odd.zip/.", "has no file name inside the archive; skipped")]
