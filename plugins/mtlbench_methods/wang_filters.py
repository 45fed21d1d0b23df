"""Fixed (non-learned) filtered image features for the Wang et al. 2018 (MICCAI) baseline.

Wang et al. feed a small "pre-enhancing" CNN with the B-mode image concatenated with three
filtered image features.  Only the abstract could be read, so the exact filters are unknown;
this module is the RECONSTRUCTION that ACSNET_SPEC.md §8.5 prescribes:

1. ``phase_symmetry``: local phase symmetry of the monogenic signal (Felsberg & Sommer) built on
   ``len(WAVELENGTH_FRACTIONS)`` log-Gabor scales, Kovesi-style, "bright feature" polarity (the
   even part is positive on bright ridges), with a noise threshold estimated from the image;
2. ``local_energy``: the monogenic amplitude sqrt(even^2 + |odd|^2) summed over the scales,
   divided by its maximum;
3. ``shadow_map``: per column, the fraction of the column's total intensity found at or below
   each depth, counted from the skin line (top row) downward.

``wang_features`` stacks them as (3, H, W) float32, each channel in [0, 1].  They are computed
once per image when a dataset is cached, so they are deterministic: no randomness, numpy FFTs
only.  Before filtering, the image is split into a periodic and a smooth component (Moisan's
periodic-plus-smooth decomposition) and only the periodic one is filtered, so the FFT's
wrap-around does not invent an edge between the top (skin) and the bottom (depth) of the image.

Inputs: a 2-D array (non-square allowed).  Integer images are divided by their dtype's maximum
(uint8 -> /255), floats are taken as intensities on [0, 1]; so ``x`` (uint8) and ``x / 255.0``
give identical outputs.

Speed (measured on the development machine, 2 CPU cores, numpy 2.4 float64 FFTs, filter bank
already built): ``wang_features`` takes about 10 ms per 256x256 image (about 0.6 ms per 64x64);
building the filter bank for a new shape adds about 1 ms, once per shape.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

# Wavelengths of the log-Gabor scales, as fractions of the image's shorter side, so that the filters
# scale with the image: 8, 16 and 32 px at 256x256; at 64x64 the smallest is clamped to 3 px.
WAVELENGTH_FRACTIONS: tuple[float, ...] = (1 / 32, 1 / 16, 1 / 8)
# No scale finer than this (a wavelength of 2 px is the Nyquist limit, where the filter is cut off).
MIN_WAVELENGTH_PX: float = 3.0
# Ratio of the log-Gabor's standard deviation to its centre frequency (Kovesi's sigmaOnf);
# 0.55 is about two octaves of bandwidth.
SIGMA_ONF: float = 0.55
# Butterworth low-pass applied to every filter (cutoff in cycles/pixel, order), so that the fine
# log-Gabor's high-frequency tail does not reach the corners of the spectrum.
LOWPASS_CUTOFF: float = 0.45
LOWPASS_ORDER: int = 15
# Noise threshold of the phase symmetry: T = mean + NOISE_K * std of the noise energy, the noise
# amplitude being modelled as Rayleigh with the scale estimated from the median amplitude.
NOISE_K: float = 2.0
# Guards every division (intensities are on [0, 1], so this is far below any real response).
EPS: float = 1e-6


def _as_gray(image: np.ndarray) -> np.ndarray:
    """The image as float64 intensities (integers divided by their dtype's maximum)."""
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D gray image (H, W), got an array of shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"expected a non-empty 2-D gray image, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float64) / float(np.iinfo(arr.dtype).max)
    if np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float64)
        if not np.isfinite(out).all():
            raise ValueError(f"image of shape {arr.shape} holds NaN or infinite values")
        return out
    raise ValueError(f"expected an integer or float image, got dtype {arr.dtype} "
                     f"(shape {arr.shape})")


def _wavelengths_px(shape: tuple[int, int], fractions: tuple[float, ...]) -> tuple[float, ...]:
    side = min(shape)
    return tuple(max(MIN_WAVELENGTH_PX, float(f) * side) for f in fractions)


@lru_cache(maxsize=16)
def _filter_bank(shape: tuple[int, int], wavelengths: tuple[float, ...], sigma_onf: float):
    """Frequency-domain filters on the ``rfft2`` grid of ``shape``, built once per shape.

    Returns (log-Gabor stack (S, H, W//2+1), Riesz x, Riesz y, periodic-smooth denominator); the
    arrays are read-only because they are shared through the cache.
    """
    h, w = shape
    fy = np.fft.fftfreq(h)[:, None]  # cycles/pixel, rows
    fx = np.fft.rfftfreq(w)[None, :]  # cycles/pixel, columns (non-negative half)
    radius = np.sqrt(fx * fx + fy * fy)
    radius[0, 0] = 1.0  # avoid log(0) and 0/0; the DC of every filter is zeroed below

    # The monogenic signal's odd part is the Riesz transform, H = (i*u, i*v) / |w|.  It is written
    # here because no well-kept library among the project's dependencies provides it (scipy and
    # numpy have no monogenic filter; the packages that do are unmaintained or pull in heavy
    # dependencies), and it is two lines in the frequency domain.
    riesz_x = 1j * fx / radius
    riesz_y = 1j * fy / radius
    # Self-conjugate Nyquist bins cannot carry an odd (imaginary) response: zero them so that the
    # odd filters are exactly Hermitian and the inverse real FFT is exact.
    if w % 2 == 0:
        riesz_x[:, -1] = 0.0
        riesz_y[:, -1] = 0.0
    if h % 2 == 0:
        riesz_x[h // 2, :] = 0.0
        riesz_y[h // 2, :] = 0.0
    riesz_x[0, 0] = 0.0
    riesz_y[0, 0] = 0.0

    lowpass = 1.0 / (1.0 + (radius / LOWPASS_CUTOFF) ** (2 * LOWPASS_ORDER))
    log_sigma_sq = 2.0 * math.log(sigma_onf) ** 2
    gabors = np.empty((len(wavelengths), h, fx.shape[1]), dtype=np.float64)
    for k, wavelength in enumerate(wavelengths):
        f0 = 1.0 / wavelength
        gabors[k] = np.exp(-(np.log(radius / f0) ** 2) / log_sigma_sq) * lowpass
        gabors[k, 0, 0] = 0.0  # no DC: flat regions give no response

    # Periodic-plus-smooth decomposition (Moisan): the smooth part's spectrum is the boundary
    # image's spectrum divided by this (discrete periodic Laplacian) denominator.
    denom = 2.0 * np.cos(2.0 * np.pi * fy) + 2.0 * np.cos(2.0 * np.pi * fx) - 4.0
    denom[0, 0] = 1.0  # the boundary image sums to zero, so its DC is zero anyway

    for arr in (gabors, riesz_x, riesz_y, denom):
        arr.flags.writeable = False
    return gabors, riesz_x, riesz_y, denom


def _periodic_spectrum(gray: np.ndarray, denom: np.ndarray) -> np.ndarray:
    """``rfft2`` of the periodic component of ``gray`` (its wrap-around jumps removed)."""
    boundary = np.zeros_like(gray)
    boundary[0, :] = gray[-1, :] - gray[0, :]
    boundary[-1, :] += gray[0, :] - gray[-1, :]
    boundary[:, 0] += gray[:, -1] - gray[:, 0]
    boundary[:, -1] += gray[:, 0] - gray[:, -1]
    smooth = np.fft.rfft2(boundary) / denom
    smooth[0, 0] = 0.0
    return np.fft.rfft2(gray) - smooth


def _monogenic(gray: np.ndarray, fractions: tuple[float, ...], sigma_onf: float):
    """Per-scale even part and odd magnitude of the monogenic signal, each (S, H, W)."""
    shape = gray.shape
    wavelengths = _wavelengths_px(shape, tuple(fractions))
    gabors, riesz_x, riesz_y, denom = _filter_bank(shape, wavelengths, float(sigma_onf))
    band = _periodic_spectrum(gray, denom)[None] * gabors
    even = np.fft.irfft2(band, s=shape)
    odd_x = np.fft.irfft2(band * riesz_x, s=shape)
    odd_y = np.fft.irfft2(band * riesz_y, s=shape)
    return even, np.sqrt(odd_x * odd_x + odd_y * odd_y)


def _symmetry_from(even: np.ndarray, odd: np.ndarray, noise_k: float, eps: float) -> np.ndarray:
    amplitude = np.sqrt(even * even + odd * odd)
    # Noise threshold (Kovesi): a Rayleigh amplitude with scale sigma has median sigma*sqrt(ln 4);
    # the per-scale sigmas are summed (noise taken as fully correlated across scales, an upper
    # bound), giving T = sigma_total * (sqrt(pi/2) + k * sqrt((4 - pi)/2)).
    sigma = float(np.median(amplitude.reshape(amplitude.shape[0], -1), axis=1).sum())
    sigma /= math.sqrt(math.log(4.0))
    threshold = sigma * (math.sqrt(math.pi / 2.0) + noise_k * math.sqrt((4.0 - math.pi) / 2.0))
    # Bright-feature polarity: energy counts where the even part is positive and dominates the odd.
    energy = np.maximum((even - odd).sum(axis=0) - threshold, 0.0)
    out = energy / (amplitude.sum(axis=0) + eps)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _energy_from(even: np.ndarray, odd: np.ndarray, eps: float) -> np.ndarray:
    energy = np.sqrt(even * even + odd * odd).sum(axis=0)
    out = energy / (float(energy.max()) + eps)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def phase_symmetry(
    image: np.ndarray,
    wavelength_fractions: tuple[float, ...] = WAVELENGTH_FRACTIONS,
    sigma_onf: float = SIGMA_ONF,
    noise_k: float = NOISE_K,
    eps: float = EPS,
) -> np.ndarray:
    """Local phase symmetry of the monogenic signal, float32 (H, W) in [0, 1]  [reconstruction].

    ``max(sum_s (even_s - |odd_s|) - T, 0) / (sum_s amplitude_s + eps)`` over the log-Gabor scales
    (Kovesi's phase symmetry for bright features, on the monogenic signal): high on bright,
    symmetric ridges (a bright line), zero on dark lines and in flat regions, about 0 for a
    constant image.  T is a noise threshold estimated from the median amplitudes.
    """
    even, odd = _monogenic(_as_gray(image), wavelength_fractions, sigma_onf)
    return _symmetry_from(even, odd, noise_k, eps)


def local_energy(
    image: np.ndarray,
    wavelength_fractions: tuple[float, ...] = WAVELENGTH_FRACTIONS,
    sigma_onf: float = SIGMA_ONF,
    eps: float = EPS,
) -> np.ndarray:
    """Local energy of the monogenic signal, float32 (H, W) in [0, 1]  [reconstruction].

    ``sum_s sqrt(even_s^2 + |odd_s|^2)`` over the log-Gabor scales, divided by its maximum (+ eps):
    peaks on lines and edges of either polarity, small in flat regions, about 0 for a constant
    image.
    """
    even, odd = _monogenic(_as_gray(image), wavelength_fractions, sigma_onf)
    return _energy_from(even, odd, eps)


def shadow_map(image: np.ndarray) -> np.ndarray:
    """Signal remaining at and below each depth, float32 (H, W) in [0, 1]  [reconstruction].

    For each column, with intensities clipped at 0 and the skin line taken as the top row:
    ``value(y) = sum_{k >= y} I(k) / sum_k I(k)``.  It is 1 on the top row, non-increasing down
    every column, and falls quickly below bright (reflecting/attenuating) structures, so acoustic
    shadows read as low values.  A column whose intensities are all 0 is 0 everywhere.  A
    constant non-zero column falls linearly from 1 to 1/H.
    """
    gray = np.clip(_as_gray(image), 0.0, None)
    remaining = np.cumsum(gray[::-1], axis=0)[::-1]  # sum over rows k >= y
    total = remaining[0:1]
    safe = np.where(total > 0.0, total, 1.0)
    out = np.where(total > 0.0, remaining / safe, 0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def wang_features(image: np.ndarray) -> np.ndarray:
    """The three fixed features with default parameters, float32 (3, H, W)  [reconstruction].

    Channels: ``phase_symmetry``, ``local_energy``, ``shadow_map``, each in [0, 1]; the
    monogenic filtering is done once and shared by the first two.
    """
    gray = _as_gray(image)
    even, odd = _monogenic(gray, WAVELENGTH_FRACTIONS, SIGMA_ONF)
    return np.stack([
        _symmetry_from(even, odd, NOISE_K, EPS),
        _energy_from(even, odd, EPS),
        shadow_map(gray),
    ])


def wang_features_batch(images: np.ndarray) -> np.ndarray:
    """``wang_features`` over a stack: (N, H, W) -> (N, 3, H, W) float32  [reconstruction].

    Equal to stacking ``wang_features`` image by image; the filter bank is built once per image
    shape and shared.
    """
    arr = np.asarray(images)
    if arr.ndim != 3:
        raise ValueError(f"expected a stack of gray images (N, H, W), got shape {arr.shape}")
    out = np.empty((arr.shape[0], 3, *arr.shape[1:]), dtype=np.float32)
    for i in range(arr.shape[0]):
        out[i] = wang_features(arr[i])
    return out
