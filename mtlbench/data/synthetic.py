"""A procedurally generated B-mode-like breast ultrasound set that ships as code.

Each image is built the way a linear-array B-mode image forms, in simplified steps:

1. a map of tissue echogenicity (backscatter amplitude): skin line, subcutaneous fat with
   Cooper's ligaments, fibroglandular tissue, the pectoralis muscle below, and a few hypoechoic
   fat lobules inside the glandular layer (look-alikes of a lesion);
2. one hypoechoic lesion replacing the tissue: benign ones oval, circumscribed and wider than
   tall; malignant ones irregular or spiculated and taller than wide;
3. the lesion's effect on the tissue behind it: posterior acoustic enhancement (benign) or
   shadowing (malignant);
4. depth attenuation, partly undone by time-gain compensation;
5. speckle: the envelope of a complex Gaussian field blurred by an anisotropic point-spread
   function (Rayleigh distributed, laterally elongated grains), multiplying the echogenicity;
6. log compression into an 8-bit display with a fixed dynamic range.

Lengths are fractions of the image size, so a 64-pixel image shows the same anatomy as a
256-pixel one (with proportionally smaller speckle grains). The mask is the sharp lesion
outline; the image's boundary is blurred. Class cues come from shape, orientation and the
posterior feature only: lesion size, depth and darkness are drawn from the same distributions
for both classes.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import ndimage

from mtlbench.data.cases import Case

CLASSES = ("benign", "malignant")
GENERATOR_VERSION = 2  # bump whenever the generated pixels change (it keys the data cache)

_REF_SIZE = 256  # the size the pixel lengths below (speckle grain, blur) are stated for
_DYNAMIC_RANGE_DB = 50.0  # display dynamic range of the log compression
_GAIN_DB = 33.0  # display gain: where echogenicity 1 (glandular tissue) lands in the 0..DR window
_TOUCH_BORDER_P = 0.06  # share of lesions placed with no margin to the side borders


# --------------------------------------------------------------------------------------------
# smooth random fields
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _bump_basis(size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(size, n) Gaussian bumps spaced evenly along one axis (a little beyond both ends).

    Returned with its contiguous transpose (n, size), both read-only.
    """
    centers = np.linspace(-0.5, size - 0.5, n) if n > 1 else np.array([size / 2])
    spacing = size / max(n - 1, 1)
    x = np.arange(size, dtype=np.float64)[:, None]
    basis = np.exp(-0.5 * ((x - centers[None, :]) / (0.75 * spacing)) ** 2)
    basis /= np.sqrt((basis**2).sum(axis=1, keepdims=True))  # unit variance everywhere
    transposed = np.ascontiguousarray(basis.T)
    basis.setflags(write=False)
    transposed.setflags(write=False)
    return basis, transposed


def _smooth_field(rng: np.random.Generator, size: int, n_rows: int, n_cols: int) -> np.ndarray:
    """A smooth zero-mean, unit-variance random field with n_rows x n_cols degrees of freedom.

    More rows than columns gives structures elongated horizontally, as the layered breast
    tissue appears under a linear probe. Built as B_y @ G @ B_x^T (separable Gaussian-bump
    interpolation of a coarse Gaussian grid), which costs next to nothing.
    """
    coarse = rng.standard_normal((n_rows, n_cols))
    return (_bump_basis(size, n_rows)[0] @ coarse) @ _bump_basis(size, n_cols)[1]


def _bump_inplace(x: np.ndarray) -> np.ndarray:
    """exp(-x^2) computed in x's own memory (cut off far out, where exp underflows slowly)."""
    np.square(x, out=x)
    np.minimum(x, 40.0, out=x)
    np.negative(x, out=x)
    return np.exp(x, out=x)


def _exp_scaled(x: np.ndarray, scale: float) -> np.ndarray:
    """scale * exp(x), computed in x's own memory."""
    np.exp(x, out=x)
    x *= scale
    return x


def _smooth_curve(rng: np.random.Generator, size: int, n: int = 5) -> np.ndarray:
    """A smooth zero-mean, unit-variance random curve along the width (a wavy layer boundary)."""
    return _bump_basis(size, n)[0] @ rng.standard_normal(n)


# --------------------------------------------------------------------------------------------
# building blocks of the image
# --------------------------------------------------------------------------------------------


def _tissue_echogenicity(rng: np.random.Generator, size: int) -> tuple[np.ndarray, dict]:
    """Echogenicity of layered breast tissue under a linear probe (1 = glandular tissue).

    From the top: coupling gel (anechoic), the bright skin line, hypoechoic subcutaneous fat in
    lobules crossed by thin bright Cooper's ligaments, the heterogeneous, horizontally streaked
    fibroglandular layer, the bright pectoral fascia and the striated pectoralis muscle. Layer
    boundaries undulate across the width. Returns the map and the mean layer depths (fractions).
    """
    # (written with in-place operations: fresh full-size temporaries cost more than the maths)
    z = (np.arange(size, dtype=np.float64) / size)[:, None]  # depth fraction, a column
    z_skin = rng.uniform(0.02, 0.045) + 0.004 * _smooth_curve(rng, size)[None, :]
    z_fat = rng.uniform(0.15, 0.26) + 0.035 * _smooth_curve(rng, size)[None, :]
    z_muscle = rng.uniform(0.74, 0.88) + 0.03 * _smooth_curve(rng, size)[None, :]

    def below(boundary: np.ndarray, width: float) -> np.ndarray:
        """Soft indicator of being deeper than ``boundary`` (a sigmoid of ``width`` depth)."""
        t = z - boundary
        t /= width
        np.tanh(t, out=t)
        t *= 0.5
        t += 0.5
        return t

    def line(depth: np.ndarray, width: float) -> np.ndarray:
        """A thin bright line along ``depth``: exp(-((z - depth) / width)^2)."""
        t = z - depth
        t /= width
        return _bump_inplace(t)

    fat_level = rng.uniform(0.3, 0.42)
    fat = _smooth_field(rng, size, 12, 10)  # fat lobules
    fat *= 0.3
    fat = _exp_scaled(fat, fat_level)
    ligaments = _smooth_field(rng, size, 6, 5)  # Cooper's ligaments: level lines of a field
    ligaments /= 0.06
    ligaments = _bump_inplace(ligaments)
    ligaments *= rng.uniform(1.5, 2.5)
    ligaments += 1.0
    fat *= ligaments

    gland = _smooth_field(rng, size, 40, 9)  # horizontally streaked fibroglandular tissue
    gland *= 0.4
    coarse = _smooth_field(rng, size, 6, 4)
    coarse *= 0.25
    gland += coarse
    gland = _exp_scaled(gland, 1.0)

    period = rng.uniform(0.022, 0.035)
    tilt = rng.uniform(-0.12, 0.12)
    x = (np.arange(size, dtype=np.float64) / size)[None, :]
    fibres = _smooth_field(rng, size, 4, 4)  # pectoralis: wavy, broken bright fibres
    fibres *= 0.8
    fibres += (z + tilt * x) / period
    fibres *= 2 * np.pi
    np.cos(fibres, out=fibres)
    fibres *= 0.5
    fibres += 0.5
    np.square(fibres, out=fibres)
    np.square(fibres, out=fibres)
    broken = _smooth_field(rng, size, 12, 10)
    broken *= 1.5
    broken += 0.5
    np.tanh(broken, out=broken)
    broken *= 0.5
    broken += 0.5
    fibres *= broken
    fibres *= 2.5
    fibres += 1.0
    muscle = fibres
    muscle *= rng.uniform(0.3, 0.42)

    tissue = gland  # fat above the glandular layer, muscle below it
    tissue -= fat
    tissue *= below(z_fat, 0.012)
    tissue += fat
    muscle -= tissue
    muscle *= below(z_muscle, 0.006)
    tissue += muscle
    fascia = line(z_muscle, 0.006)
    fascia *= 0.9
    tissue += fascia
    gel = 0.05  # anechoic coupling gel above the skin
    tissue -= gel
    tissue *= below(z_skin, 0.004)
    tissue += gel
    skin = line(z_skin + 0.006, 0.006)
    skin *= rng.uniform(1.3, 1.9)
    tissue += skin
    layers = {"skin": float(z_skin.mean()), "fat": float(z_fat.mean()),
              "muscle": float(z_muscle.mean())}
    return tissue, layers


def _fat_lobules(rng: np.random.Generator, size: int, mean_count: float,
                 layers: dict) -> np.ndarray:
    """Multiplicative darkening by hypoechoic fat lobules inside the glandular layer.

    Flat-topped ovals, wider than tall, less dark than a lesion and without posterior effect:
    the look-alikes that keep a lesion from being found by darkness alone.
    """
    factor = np.ones((size, size))
    count = rng.poisson(mean_count) if mean_count > 0 else 0
    for _ in range(count):
        cy = rng.uniform(layers["fat"] + 0.02, layers["muscle"] - 0.04) * size
        cx = rng.uniform(0.0, 1.0) * size
        half_w = rng.uniform(0.025, 0.08) * size
        half_h = half_w / rng.uniform(1.3, 2.8)
        depth = rng.uniform(0.3, 0.5)
        y0, y1 = max(int(cy - 2 * half_h), 0), min(int(cy + 2 * half_h) + 1, size)
        x0, x1 = max(int(cx - 2 * half_w), 0), min(int(cx + 2 * half_w) + 1, size)
        if y1 <= y0 or x1 <= x0:
            continue
        dy = (np.arange(y0, y1)[:, None] + 0.5 - cy) / half_h
        dx = (np.arange(x0, x1)[None, :] + 0.5 - cx) / half_w
        factor[y0:y1, x0:x1] *= 1.0 - depth * np.exp(-np.minimum((dx**2 + dy**2) ** 2, 40.0))
    return factor


def _lesion_outline(rng: np.random.Generator, label: int, irregularity: float) -> dict:
    """The lesion's shape as a polar radius function in ellipse-normalised coordinates.

    Benign: an oval, wider than tall (width/height 1.3-2.0), with at most a gentle two- or
    three-lobed undulation: a circumscribed margin. Malignant: taller than wide (0.6-0.9), the
    radius modulated by harmonics 3-12 (angular, microlobulated margin) plus 4-10 thin tapered
    spicules; ``irregularity`` scales both. Orientation is tilted up to about 15 degrees.
    """
    if label == 0:
        aspect = rng.uniform(1.3, 2.0)  # width / height
        orders = np.arange(2, 4)
        amps = rng.normal(0.0, 0.025, orders.size)
        spicules = np.zeros((0, 3))
    else:
        aspect = rng.uniform(0.6, 0.9)
        orders = np.arange(3, 13)
        amps = irregularity * rng.normal(0.0, 0.3, orders.size) / orders**0.85
        n_spicules = int(rng.integers(4, 11))
        spicules = np.column_stack([
            rng.uniform(-np.pi, np.pi, n_spicules),  # direction
            irregularity * rng.uniform(0.2, 0.6, n_spicules),  # length (normalised radius)
            rng.uniform(0.06, 0.14, n_spicules),  # half-width at the base (radians)
        ])
        if irregularity <= 0:
            spicules = spicules[:0]
    return {
        "aspect": float(aspect),
        "tilt": float(np.clip(rng.normal(0.0, 0.12), -0.26, 0.26)),
        "orders": orders,
        "amps": amps,
        "phases": rng.uniform(-np.pi, np.pi, orders.size),
        "spicules": spicules,
    }


_ANGLES = 2048  # resolution of the tabulated boundary radius


def _outline_radius(theta: np.ndarray, outline: dict) -> np.ndarray:
    """The normalised boundary radius at polar angle(s) ``theta`` (1 = the plain ellipse)."""
    r = np.ones_like(theta)
    for k, a, p in zip(outline["orders"], outline["amps"], outline["phases"], strict=True):
        r += a * np.cos(k * theta + p)
    for direction, length, width in outline["spicules"]:
        d = np.abs(np.angle(np.exp(1j * (theta - direction))))
        r += length * np.clip(1.0 - d / width, 0.0, None) ** 1.5
    return np.maximum(r, 0.35)


def _rasterise_lesion(size: int, outline: dict, center: tuple[float, float],
                      semi_axes: tuple[float, float]) -> np.ndarray:
    """The sharp lesion mask: pixels whose normalised radius lies inside the outline.

    The radius is tabulated over the angle and the test runs only in the lesion's bounding box.
    """
    cy, cx = center
    a, b = semi_axes  # horizontal, vertical semi-axes in pixels
    table = _outline_radius(np.linspace(-np.pi, np.pi, _ANGLES, endpoint=False), outline)
    reach = max(a, b) * float(table.max()) + 2.0
    y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 1, size)
    x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 1, size)
    mask = np.zeros((size, size), dtype=bool)
    if y1 > y0 and x1 > x0:
        dy = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5 - cy
        dx = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5 - cx
        c, s = math.cos(outline["tilt"]), math.sin(outline["tilt"])
        u = (c * dx + s * dy) / a
        v = (-s * dx + c * dy) / b
        index = ((np.arctan2(v, u) + np.pi) * (_ANGLES / (2 * np.pi))).astype(np.intp) % _ANGLES
        mask[y0:y1, x0:x1] = np.hypot(u, v) < table[index]
    iy, ix = min(max(int(cy), 0), size - 1), min(max(int(cx), 0), size - 1)
    mask[iy, ix] = True  # never empty, even at tiny sizes
    return mask


def _posterior_gain(mask: np.ndarray, gain_db: float, decay: float, scale: float) -> np.ndarray:
    """Posterior acoustic enhancement (gain_db > 0) or shadowing (gain_db < 0).

    Behind the lesion's far wall, each column's brightness changes by
    gain_db * w(x) * exp(-distance / decay) decibels, with w growing with the lesion's
    thickness in that column (the path length through it), so the band is as wide as the
    lesion and fades with depth; its lateral edges are softened a little.
    """
    size = mask.shape[0]
    thickness = mask.sum(axis=0).astype(np.float64)
    if thickness.max() <= 0 or gain_db == 0:
        return np.ones(mask.shape)
    bottom = size - 1 - np.argmax(mask[::-1], axis=0)
    weight = np.sqrt(thickness / thickness.max())
    depth = np.arange(size, dtype=np.float64)[:, None] - bottom[None, :]  # below the far wall
    onset = depth / max(1.5 * scale, 0.5)  # ramps up over a pixel or two
    np.clip(onset, 0.0, 1.0, out=onset)
    band = depth
    np.maximum(band, 0.0, out=band)
    band *= -1.0 / decay
    np.exp(band, out=band)
    band *= onset
    band *= weight[None, :]
    ndimage.gaussian_filter1d(band, sigma=max(1.5 * scale, 0.3), axis=1, mode="nearest",
                              output=band)
    band *= gain_db * math.log(10.0) / 20.0  # decibels to a natural-log amplitude factor
    return np.exp(band, out=band)


def _attenuation(size: int, alpha_db: float, tgc: float) -> np.ndarray:
    """Depth attenuation of alpha_db over the full depth, a fraction tgc of it compensated."""
    depth = np.arange(size, dtype=np.float64)[:, None] / size
    return 10.0 ** (-alpha_db * (1.0 - tgc) * depth / 20.0)


def _speckle(rng: np.random.Generator, size: int, power: float) -> np.ndarray:
    """Fully developed speckle: the envelope of complex Gaussian noise blurred by the PSF.

    The point-spread function is Gaussian, longer laterally than axially, so grains are
    elongated horizontally; the envelope is Rayleigh distributed. ``power`` raises it to a
    power (0: no speckle, 1: Rayleigh amplitude, 2: exponential intensity statistics, heavier);
    the result has mean 1.
    """
    if power == 0:
        return np.ones((size, size))
    scale = size / _REF_SIZE
    sigma = (0.85 * scale, 1.7 * scale)  # axial, lateral (about 2 x 4 px FWHM at 256 px)
    re = rng.standard_normal((size, size))
    im = rng.standard_normal((size, size))
    ndimage.gaussian_filter(re, sigma, mode="wrap", output=re)
    ndimage.gaussian_filter(im, sigma, mode="wrap", output=im)
    envelope = np.hypot(re, im, out=re)
    if power != 1:
        envelope **= power
    envelope /= envelope.mean()
    return envelope


def _log_compress(amplitude: np.ndarray, gain_db: float) -> np.ndarray:
    """B-mode display: 20 log10 amplitude, a fixed dynamic range mapped onto 0..255.

    Overwrites ``amplitude``.
    """
    db = np.maximum(amplitude, 1e-6, out=amplitude)
    np.log10(db, out=db)
    db *= 20.0
    db += gain_db
    db *= 255.0 / _DYNAMIC_RANGE_DB
    np.rint(db, out=db)
    np.clip(db, 0, 255, out=db)
    return db.astype(np.uint8)


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def _generate(rng: np.random.Generator, label: int, size: int, *, speckle: float,
              contrast: float, posterior: float, irregularity: float, blur: float,
              lobules: float, lesion_size: tuple[float, float]
              ) -> tuple[np.ndarray, np.ndarray, dict]:
    """generate_case, also returning the drawn lesion parameters."""
    if label not in (0, 1):
        raise ValueError(f"label must be 0 (benign) or 1 (malignant), got {label!r}")
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    lo, hi = lesion_size
    if not 0 < lo <= hi < 1:
        raise ValueError(f"lesion_size must be 0 < low <= high < 1, got {lesion_size!r}")
    scale = size / _REF_SIZE
    # one stream per building block, so that a knob changes only what it is about
    rng_tissue, rng_lobules, rng_lesion, rng_interior, rng_scan, rng_speckle = rng.spawn(6)

    tissue, layers = _tissue_echogenicity(rng_tissue, size)
    tissue *= _fat_lobules(rng_lobules, size, lobules, layers)

    # the lesion: size and darkness drawn alike for both classes; shape by class
    outline = _lesion_outline(rng_lesion, label, irregularity)
    diameter = rng_lesion.uniform(lo, hi) * size  # of the circle with the ellipse's area
    a = 0.5 * diameter * math.sqrt(outline["aspect"])
    b = 0.5 * diameter / math.sqrt(outline["aspect"])
    reach = 1.0 + max(0.0, float(np.abs(outline["amps"]).sum()))
    half_w, half_h = a * reach, b * reach
    margin = 0.0 if rng_lesion.random() < _TOUCH_BORDER_P else 0.03 * size + half_w
    margin = min(margin, 0.5 * size)
    cx = rng_lesion.uniform(margin, size - margin)
    top = (layers["fat"] - 0.02) * size + 0.4 * half_h
    bottom = 0.62 * size
    cy = rng_lesion.uniform(min(top, bottom), bottom)
    mask = _rasterise_lesion(size, outline, (cy, cx), (a, b))

    level = (1.0 - float(np.clip(contrast * rng_lesion.uniform(0.8, 1.15), 0.0, 0.97)))
    interior = _smooth_field(rng_interior, size, 10, 10)  # mild internal heterogeneity
    interior *= 0.2
    interior = _exp_scaled(interior, level)
    # blend it in through the blurred mask, within the lesion's box plus the blur's reach
    sigma = max(1.2 * blur * scale, 1e-3)
    ys, xs = np.nonzero(mask)
    pad = int(math.ceil(4.0 * sigma)) + 1
    box = (slice(max(ys.min() - pad, 0), ys.max() + pad + 1),
           slice(max(xs.min() - pad, 0), xs.max() + pad + 1))
    soft = ndimage.gaussian_filter(mask[box].astype(np.float64), sigma, mode="reflect")
    echo = tissue
    echo[box] += (interior[box] - echo[box]) * soft

    if label == 0:  # enhancement behind a low-attenuation (fluid-like) lesion
        gain_db = posterior * rng_lesion.uniform(5.0, 12.0)
        decay = rng_lesion.uniform(0.12, 0.3) * size
    else:  # shadowing behind a strongly attenuating (desmoplastic) lesion
        gain_db = -posterior * rng_lesion.uniform(8.0, 24.0)
        decay = rng_lesion.uniform(0.25, 0.6) * size
    echo *= _posterior_gain(mask, gain_db, decay, scale)

    echo *= _attenuation(size, rng_scan.uniform(20.0, 35.0), rng_scan.uniform(0.6, 0.85))
    echo *= _speckle(rng_speckle, size, speckle)
    image = _log_compress(echo, _GAIN_DB + rng_scan.uniform(-2.0, 2.0))

    info = {  # the drawn lesion parameters (lengths as fractions of the image size)
        "diameter": float(diameter / size), "aspect": float(outline["aspect"]),
        "tilt": float(outline["tilt"]), "center": (float(cy / size), float(cx / size)),
        "posterior_db": float(gain_db), "lesion_level": float(level),
        "spicules": int(len(outline["spicules"])),
    }
    return image, mask, info


def generate_case(rng: np.random.Generator, label: int, size: int = 256, *,
                  speckle: float = 1.0, contrast: float = 0.85, posterior: float = 1.0,
                  irregularity: float = 1.0, blur: float = 1.0, lobules: float = 1.0,
                  lesion_size: tuple[float, float] = (0.10, 0.27)
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One B-mode-like image (uint8, size x size) and its sharp lesion mask (bool).

    ``label`` 0 is benign, 1 malignant; ``rng`` is consumed (the same generator state gives
    the same case). Difficulty knobs (keyword-only); the defaults train a small CNN to Dice
    ~0.7-0.8 and accuracy ~0.9 in 5 CPU epochs at 64x64:

    - ``speckle``: speckle power; 0 none, 1 Rayleigh amplitude speckle (default), 2 heavier
      (exponential intensity statistics).
    - ``contrast``: how much darker the lesion is than glandular tissue, as a fraction of that
      tissue's echogenicity, jittered by -20%/+15% per case; the default 0.85 puts lesions at
      -10 to -30 dB (hypoechoic to near-anechoic), 0.65 at about -6 to -13 dB; 0 makes them
      iso-echoic, visible only by their edge blur, texture and posterior feature.
    - ``posterior``: scales the posterior acoustic feature, in dB right behind the lesion:
      enhancement +5 to +12 dB (benign), shadowing -8 to -24 dB (malignant) at 1; 0 removes
      this class cue.
    - ``irregularity``: scales the malignant margin's harmonics and spicule lengths; 0 leaves
      a smooth taller-than-wide oval (orientation and posterior shadow still tell the class).
    - ``blur``: lesion-boundary blur in the image (the mask stays sharp), in units of a
      Gaussian sigma of 1.2 px at 256 px.
    - ``lobules``: mean number (Poisson) of hypoechoic fat lobules, lesion look-alikes.
    - ``lesion_size``: range of the lesion's equivalent diameter (the circle of the same area,
      before margin irregularity) as a fraction of the image width. At the default
      (0.10, 0.27) benign lesions span about 14-34% of the width (5th-95th percentile) and
      malignant ones about 12-31% including spicules.
    """
    image, mask, _ = _generate(rng, label, size, speckle=speckle, contrast=contrast,
                               posterior=posterior, irregularity=irregularity, blur=blur,
                               lobules=lobules, lesion_size=lesion_size)
    return image, mask


def _case_seeds(seed: int, index: int) -> tuple[np.random.SeedSequence, np.random.SeedSequence]:
    """Case ``index``'s own streams: (its label priority, its pixels); same as spawn(n)[index]."""
    child = np.random.SeedSequence(seed, spawn_key=(index,))
    priority, pixels = child.spawn(2)
    return priority, pixels


def generate_synthetic(n_cases: int = 160, size: int = 256, seed: int = 0,
                       malignant_fraction: float = 1 / 3, *, speckle: float = 1.0,
                       contrast: float = 0.85, posterior: float = 1.0, irregularity: float = 1.0,
                       blur: float = 1.0, lobules: float = 1.0,
                       lesion_size: tuple[float, float] = (0.10, 0.27)) -> list[Case]:
    """``n_cases`` synthetic cases "syn-000", "syn-001", ..., deterministic from ``seed``.

    Exactly round(n_cases * malignant_fraction) are malignant: each case draws a random
    priority from its own stream and the lowest-priority ones are malignant, so the classes are
    shuffled through the ids. Each case's pixels come from its own child stream
    (SeedSequence(seed).spawn), so they depend only on (seed, index, label): case "syn-003" is
    identical for any ``n_cases`` that gives it the same label; a label can change with
    ``n_cases`` only for cases whose priority lies near the cut. Keyword knobs: see
    generate_case.
    """
    if n_cases < 0:
        raise ValueError(f"n_cases must be >= 0, got {n_cases}")
    if not 0.0 <= malignant_fraction <= 1.0:
        raise ValueError(f"malignant_fraction must lie in [0, 1], got {malignant_fraction}")
    n_malignant = round(n_cases * malignant_fraction)
    streams = [_case_seeds(seed, i) for i in range(n_cases)]
    priorities = np.array([np.random.default_rng(p).random() for p, _ in streams])
    order = np.lexsort((np.arange(n_cases), priorities))
    labels = np.zeros(n_cases, dtype=np.int64)
    labels[order[:n_malignant]] = 1
    width = max(3, len(str(n_cases - 1)))
    cases = []
    for i, (_, pixel_seed) in enumerate(streams):
        label = int(labels[i])
        image, mask, info = _generate(
            np.random.default_rng(pixel_seed), label, size, speckle=speckle, contrast=contrast,
            posterior=posterior, irregularity=irregularity, blur=blur, lobules=lobules,
            lesion_size=lesion_size)
        case_id = f"syn-{i:0{width}d}"
        cases.append(Case(id=case_id, image=image, mask=mask, label=label, group=case_id,
                          source="synthetic",
                          meta={"generator_version": GENERATOR_VERSION, "seed": int(seed), **info}))
    return cases
