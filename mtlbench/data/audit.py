"""Find exact and near-duplicate images and label conflicts, and turn them into split groups.

Near duplicates are found by the correlation of small zero-mean thumbnails (the whole image
resized to 32×32): on BUSI every listed same-scan pair, re-cropped ones included, correlates
above 0.996, while unrelated scans rarely pass 0.9. Written here because the job is one matrix
product; an image-hash library would add a dependency for less control over the threshold.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from mtlbench.data.cases import Case

NEAR_THRESHOLD = 0.97
THUMB_SIZE = 32
AUDIT_VERSION = 1  # bump when grouping changes (it is part of dataset fingerprints)


@dataclass
class AuditReport:
    """What an audit found. Pairs are (id, id, correlation); clusters are lists of ids."""

    exact: list[list[str]] = field(default_factory=list)
    near_pairs: list[tuple[str, str, float]] = field(default_factory=list)
    clusters: list[list[str]] = field(default_factory=list)
    conflicts: list[list[str]] = field(default_factory=list)  # clusters with several labels
    group_of: dict[str, str] = field(default_factory=dict)

    def cross_class_pairs(self, labels: dict[str, int]) -> list[tuple[str, str, float]]:
        return [p for p in self.near_pairs if labels[p[0]] != labels[p[1]]]


def thumbnails(cases: list[Case], size: int = THUMB_SIZE) -> np.ndarray:
    """(N, size²) zero-mean, unit-norm thumbnails of the case images."""
    return image_thumbnails([case.image for case in cases], size)


def image_thumbnails(images, size: int = THUMB_SIZE) -> np.ndarray:
    """(N, size²) zero-mean, unit-norm thumbnails of uint8 gray images (any sizes)."""
    out = np.empty((len(images), size * size))
    for i, image in enumerate(images):
        t = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR),
                       dtype=np.float64).ravel()
        t -= t.mean()
        out[i] = t / (np.linalg.norm(t) + 1e-12)
    return out


def audit_cases(cases: list[Case], threshold: float = NEAR_THRESHOLD) -> AuditReport:
    """Exact duplicates (identical pixels), near duplicates (thumbnail correlation ≥ threshold),
    their clusters (connected components) and the clusters whose cases disagree on the label."""
    ids = [c.id for c in cases]
    report = AuditReport()
    by_pixels: dict[str, list[str]] = {}
    for case in cases:
        digest = hashlib.sha256(np.ascontiguousarray(case.image).tobytes()
                                + str(case.image.shape).encode()).hexdigest()
        by_pixels.setdefault(digest, []).append(case.id)
    report.exact = [group for group in by_pixels.values() if len(group) > 1]

    thumbs = thumbnails(cases)
    corr = thumbs @ thumbs.T
    rows, cols = np.nonzero(np.triu(corr >= threshold, k=1))
    report.near_pairs = [(ids[i], ids[j], float(corr[i, j])) for i, j in zip(rows, cols,
                                                                             strict=True)]
    index = {case_id: i for i, case_id in enumerate(ids)}
    links = [(index[a], index[b]) for a, b, _ in report.near_pairs]
    links += [(index[g[0]], index[other]) for g in report.exact for other in g[1:]]
    for group in _components(len(cases), links):
        names = [ids[i] for i in group]
        for name in names:
            report.group_of[name] = names[0]
        if len(group) > 1:
            report.clusters.append(names)
            if len({cases[i].label for i in group}) > 1:
                report.conflicts.append(names)
    return report


def cross_duplicates(ids_a, images_a, ids_b, images_b, threshold: float = NEAR_THRESHOLD
                     ) -> list[tuple[str, str, float]]:
    """Near duplicates across two image sets: (id in a, id in b, correlation) for every pair
    whose thumbnails correlate at ``threshold`` or more, highest first. Public BUS sets share
    scans, so a test set may hold copies of training images."""
    corr = image_thumbnails(images_a) @ image_thumbnails(images_b).T
    rows, cols = np.nonzero(corr >= threshold)
    pairs = [(ids_a[i], ids_b[j], float(corr[i, j])) for i, j in zip(rows, cols, strict=True)]
    return sorted(pairs, key=lambda p: -p[2])


def with_duplicate_groups(cases: list[Case], threshold: float = NEAR_THRESHOLD) -> list[Case]:
    """The cases with ``group`` set so that duplicate clusters and any groups the cases already
    had (patients) stay whole: the connected components of both relations."""
    report = audit_cases(cases, threshold)
    index = {case.id: i for i, case in enumerate(cases)}
    first_of_group: dict[str, int] = {}
    links = [(index[c.id], index[report.group_of[c.id]]) for c in cases]
    links += [(first_of_group.setdefault(c.group, i), i) for i, c in enumerate(cases)]
    group_of: dict[int, str] = {}
    for component in _components(len(cases), links):
        for i in component:
            group_of[i] = cases[component[0]].id
    return [dataclasses.replace(c, group=group_of[i]) for i, c in enumerate(cases)]


def _components(n: int, links: list[tuple[int, int]]) -> list[list[int]]:
    """Connected components of ``n`` nodes under ``links`` (union-find), each sorted."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in links:
        parent[find(i)] = find(j)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(find(i), []).append(i)
    return list(members.values())
